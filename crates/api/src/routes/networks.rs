//! `/v1/networks`: bridge networks (create, list, remove).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zlayer_agent::network::NetworkInfo;

use super::{ApiResult, AppState};
use crate::error::ApiError;
use crate::types::RemovedResponse;

/// Body of `POST /v1/networks`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateNetwork {
    pub name: String,
    /// IPv4 CIDR; a free /16 of the agent's pool when absent.
    #[serde(default)]
    pub subnet: Option<String>,
}

#[utoipa::path(post, path = "/v1/networks", tag = "networks", operation_id = "network_create",
    request_body = CreateNetwork,
    responses((status = 200, description = "The network", body = NetworkInfo)))]
pub async fn create(
    State(agent): State<AppState>,
    Json(req): Json<CreateNetwork>,
) -> ApiResult<Json<NetworkInfo>> {
    agent
        .create_network(&req.name, req.subnet.as_deref())
        .await
        .map(Json)
        .map_err(ApiError)
}

#[utoipa::path(get, path = "/v1/networks", tag = "networks", operation_id = "network_list",
    responses((status = 200, description = "Every bridge network", body = Vec<NetworkInfo>)))]
pub async fn list(State(agent): State<AppState>) -> ApiResult<Json<Vec<NetworkInfo>>> {
    agent.list_networks().await.map(Json).map_err(ApiError)
}

#[utoipa::path(delete, path = "/v1/networks/{name}", tag = "networks", operation_id = "network_remove",
    params(("name" = String, Path, description = "Network name")),
    responses((status = 200, description = "Removed", body = RemovedResponse)))]
pub async fn remove(
    State(agent): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<RemovedResponse>> {
    agent.remove_network(&name).await.map_err(ApiError)?;
    Ok(Json(RemovedResponse { removed: name }))
}

//! `/v1/networks`: bridge networks (create, list, remove).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use zlayer_agent::network::NetworkInfo;

use super::{ApiResult, AppState};
use crate::error::ApiError;

/// Body of `POST /v1/networks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateNetwork {
    pub name: String,
    /// IPv4 CIDR; a free /16 of the agent's pool when absent.
    #[serde(default)]
    pub subnet: Option<String>,
}

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

pub async fn list(State(agent): State<AppState>) -> ApiResult<Json<Vec<NetworkInfo>>> {
    agent.list_networks().await.map(Json).map_err(ApiError)
}

pub async fn remove(
    State(agent): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    agent.remove_network(&name).await.map_err(ApiError)?;
    Ok(Json(serde_json::json!({ "removed": name })))
}

//! `/v1/volumes`: named volumes.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zlayer_agent::volumes::VolumeInfo;

use super::{ApiResult, AppState};
use crate::types::RemovedResponse;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateVolume {
    pub name: String,
}

#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", operation_id = "volume_create",
    request_body = CreateVolume,
    responses((status = 200, description = "The volume (created unless it existed)", body = VolumeInfo)))]
pub async fn create(
    State(agent): State<AppState>,
    Json(req): Json<CreateVolume>,
) -> ApiResult<Json<VolumeInfo>> {
    Ok(Json(agent.create_volume(&req.name).await?))
}

#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", operation_id = "volume_list",
    responses((status = 200, description = "Every volume", body = Vec<VolumeInfo>)))]
pub async fn list(State(agent): State<AppState>) -> ApiResult<Json<Vec<VolumeInfo>>> {
    Ok(Json(agent.list_volumes().await?))
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes", operation_id = "volume_remove",
    params(("name" = String, Path, description = "Volume name")),
    responses((status = 200, description = "Removed", body = RemovedResponse)))]
pub async fn remove(
    State(agent): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<RemovedResponse>> {
    agent.remove_volume(&name).await?;
    Ok(Json(RemovedResponse { removed: name }))
}

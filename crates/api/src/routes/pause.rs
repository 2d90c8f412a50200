//! `/v1/containers/{id}/pause` and `/unpause`: freeze and thaw a running container
//! (`Agent::pause_container`, `Agent::unpause_container`).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, AppState};

/// Answer of `POST /v1/containers/{id}/pause`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PausedResponse {
    /// The container as it was named in the request.
    pub paused: String,
}

/// Answer of `POST /v1/containers/{id}/unpause`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnpausedResponse {
    /// The container as it was named in the request.
    pub unpaused: String,
}

#[utoipa::path(post, path = "/v1/containers/{id}/pause", tag = "containers", operation_id = "container_pause",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    responses((status = 200, description = "Paused: every process frozen", body = PausedResponse)))]
pub async fn pause(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<PausedResponse>> {
    agent.pause_container(&id).await?;
    Ok(Json(PausedResponse { paused: id }))
}

#[utoipa::path(post, path = "/v1/containers/{id}/unpause", tag = "containers", operation_id = "container_unpause",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    responses((status = 200, description = "Unpaused: its processes run again", body = UnpausedResponse)))]
pub async fn unpause(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<UnpausedResponse>> {
    agent.unpause_container(&id).await?;
    Ok(Json(UnpausedResponse { unpaused: id }))
}

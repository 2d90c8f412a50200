//! `/v1/volumes`: named volumes.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zlayer_agent::volumes::{self, VolumeInfo};

use super::{blocking, ApiResult, AppState};
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
    blocking(move || {
        let dir = volumes::ensure_volume_dir(&agent.config().paths.volumes(), &req.name)?;
        Ok(VolumeInfo {
            name: req.name,
            mountpoint: dir.display().to_string(),
        })
    })
    .await
    .map(Json)
}

#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", operation_id = "volume_list",
    responses((status = 200, description = "Every volume", body = Vec<VolumeInfo>)))]
pub async fn list(State(agent): State<AppState>) -> ApiResult<Json<Vec<VolumeInfo>>> {
    blocking(move || volumes::list(&agent.config().paths.volumes()))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes", operation_id = "volume_remove",
    params(("name" = String, Path, description = "Volume name")),
    responses((status = 200, description = "Removed", body = RemovedResponse)))]
pub async fn remove(
    State(agent): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<RemovedResponse>> {
    blocking(move || {
        let users: Vec<String> = agent
            .containers()
            .list()?
            .into_iter()
            .filter(|c| {
                zlayer_agent::containers::request::named_volumes_of(&c.spec).contains(&name)
            })
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(zlayer_agent::AgentError::conflict(format!(
                "volume {name} is in use by container(s) {}; remove them first",
                users.join(", ")
            )));
        }
        volumes::remove(&agent.config().paths.volumes(), &name)?;
        Ok(RemovedResponse { removed: name })
    })
    .await
    .map(Json)
}

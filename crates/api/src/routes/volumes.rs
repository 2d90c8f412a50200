//! `/v1/volumes`: named volumes.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use zlayer_agent::volumes::{self, VolumeInfo};

use super::{blocking, ApiResult, AppState};

#[derive(Debug, Serialize, Deserialize)]
pub struct CreateVolume {
    pub name: String,
}

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

pub async fn list(State(agent): State<AppState>) -> ApiResult<Json<Vec<VolumeInfo>>> {
    blocking(move || volumes::list(&agent.config().paths.volumes()))
        .await
        .map(Json)
}

pub async fn remove(
    State(agent): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
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
        Ok(serde_json::json!({"removed": name}))
    })
    .await
    .map(Json)
}

//! `POST /v1/containers/{id}/rename?name=NEW` (`Agent::rename_container`).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, AppState};

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RenameQuery {
    /// The new name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 characters.
    pub name: String,
}

/// Answer of `POST /v1/containers/{id}/rename`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RenamedResponse {
    /// The container as it was named in the request.
    pub renamed: String,
    /// Its name now.
    pub name: String,
}

#[utoipa::path(post, path = "/v1/containers/{id}/rename", tag = "containers", operation_id = "container_rename",
    params(("id" = String, Path, description = "Container id, id prefix or name"), RenameQuery),
    responses((status = 200, description = "Renamed (and its DNS name with it)", body = RenamedResponse)))]
pub async fn rename(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> ApiResult<Json<RenamedResponse>> {
    agent.rename_container(&id, &q.name).await?;
    Ok(Json(RenamedResponse {
        renamed: id,
        name: q.name,
    }))
}

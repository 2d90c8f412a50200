//! `GET /v1/containers/{id}/top[?ps_args=-ef]` (`Agent::container_top`).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use zlayer_agent::containers::top::TopResult;

use super::{ApiResult, AppState};

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// Options for the host's `ps`, separated by spaces, as docker's API takes them
    /// (default `-ef`).
    pub ps_args: Option<String>,
}

#[utoipa::path(get, path = "/v1/containers/{id}/top", tag = "containers", operation_id = "container_top",
    params(("id" = String, Path, description = "Container id, id prefix or name"), TopQuery),
    responses((status = 200, description = "The container's processes, ps-style", body = TopResult)))]
pub async fn top(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TopQuery>,
) -> ApiResult<Json<TopResult>> {
    let args: Vec<String> = q
        .ps_args
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(Json(agent.container_top(&id, &args).await?))
}

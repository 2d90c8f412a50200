//! `GET /v1/containers/{id}/port[?port=80/tcp]` (`Agent::container_ports`).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use zlayer_agent::network::PortMapping;

use super::{ApiResult, AppState};

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortQuery {
    /// Only the mappings of this container port: `80` (tcp) or `53/udp`.
    pub port: Option<String>,
}

#[utoipa::path(get, path = "/v1/containers/{id}/port", tag = "containers", operation_id = "container_port",
    params(("id" = String, Path, description = "Container id, id prefix or name"), PortQuery),
    responses((status = 200, description = "Published ports (none when not running)", body = Vec<PortMapping>)))]
pub async fn port(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PortQuery>,
) -> ApiResult<Json<Vec<PortMapping>>> {
    Ok(Json(agent.container_ports(&id, q.port.as_deref()).await?))
}

//! The HTTP server: routes onto agent calls, served on a unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::mpsc;
use zlayer_agent::Agent;

use crate::types::{VersionInfo, API_VERSION};

use crate::routes::{
    archive, containers, images, networks, pause, port, rename, services, top, volumes, AppState,
};

/// All routes of the API.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/ping", get(ping))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/images", get(images::list).delete(images::remove))
        .route("/v1/images/pull", post(images::pull))
        .route("/v1/images/inspect", get(images::inspect))
        .route("/v1/images/prune", post(images::prune))
        .route("/v1/images/load", post(images::load))
        .route("/v1/images/unpack", post(images::unpack))
        .route(
            "/v1/containers",
            get(containers::list).post(containers::create),
        )
        .route(
            "/v1/containers/{id}",
            get(containers::inspect).delete(containers::remove),
        )
        .route("/v1/containers/{id}/stop", post(containers::stop))
        .route("/v1/containers/{id}/kill", post(containers::kill))
        .route("/v1/containers/{id}/pause", post(pause::pause))
        .route("/v1/containers/{id}/unpause", post(pause::unpause))
        .route("/v1/containers/{id}/rename", post(rename::rename))
        .route("/v1/containers/{id}/port", get(port::port))
        .route("/v1/containers/{id}/top", get(top::top))
        .route("/v1/containers/{id}/wait", post(containers::wait))
        .route("/v1/containers/{id}/logs", get(containers::logs))
        .route("/v1/containers/{id}/stats", get(containers::stats))
        .route("/v1/containers/{id}/exec", post(containers::exec))
        .route("/v1/containers/{id}/attach", post(containers::attach))
        .route(
            "/v1/containers/{id}/archive",
            get(archive::get).put(archive::put),
        )
        .route("/v1/containers/{id}/archive/stat", get(archive::stat))
        .route("/v1/volumes", get(volumes::list).post(volumes::create))
        .route("/v1/volumes/{name}", delete(volumes::remove))
        .route("/v1/deployments", post(services::deploy))
        .route("/v1/deployments/{name}", delete(services::undeploy))
        .route("/v1/services", get(services::list))
        .route("/v1/services/scale", post(services::scale))
        .route("/v1/events", get(services::events))
        .route("/v1/networks", get(networks::list).post(networks::create))
        .route("/v1/networks/{name}", delete(networks::remove))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::types::MAX_JSON_BODY,
        ))
        .layer(axum::middleware::map_response(name_the_body_limit))
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            services::track_latency,
        ))
        .layer(axum::middleware::from_fn(crate::error::json_errors))
        .with_state(agent)
}

/// axum answers an oversized body with a bare "length limit exceeded"; say which limit, in
/// the API's JSON error shape.
async fn name_the_body_limit(resp: Response) -> Response {
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return resp;
    }
    let body = crate::types::ErrorBody {
        error: crate::types::body_too_large(None),
        kind: zlayer_agent::ErrorKind::InvalidInput,
        exit_code: None,
    };
    axum::response::IntoResponse::into_response((StatusCode::PAYLOAD_TOO_LARGE, Json(body)))
}

#[utoipa::path(get, path = "/v1/version", tag = "system", operation_id = "version",
    responses((status = 200, description = "This daemon's version and directories", body = VersionInfo)))]
pub(crate) async fn version(State(agent): State<AppState>) -> Json<VersionInfo> {
    let paths = &agent.config().paths;
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION.to_string(),
        root: paths.root.display().to_string(),
        state: paths.state.display().to_string(),
    })
}

/// Liveness: answers `OK` as soon as the API listens.
#[utoipa::path(get, path = "/v1/ping", tag = "system", operation_id = "ping",
    responses((status = 200, description = "The daemon is up", body = String, content_type = "text/plain")))]
pub(crate) async fn ping() -> &'static str {
    "OK"
}

/// This API's OpenAPI 3 document (see [`crate::openapi`]).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "system", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(crate::openapi::document_json()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A response that streams JSON lines sent into the returned channel, for long operations
/// (pull progress, log following, events). The stream ends when every sender is dropped.
pub fn json_lines_response<T: Serialize + Send + 'static>() -> (mpsc::Sender<T>, Response) {
    let (tx, rx) = mpsc::channel::<T>(64);
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_else(|e| {
            // Serialising our own plain structs cannot fail; if it ever does, say so in-band
            // instead of silently truncating the stream.
            serde_json::to_vec(&serde_json::json!({"error": format!("serialising event: {e}")}))
                .unwrap_or_default()
        });
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
    });
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()));
    (tx, response)
}

use tokio_stream::StreamExt as _;

/// Binds `socket` (replacing a stale socket file), makes it mode 0660, and serves until
/// `shutdown` completes.
pub async fn serve_unix(
    socket: &Path,
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating socket directory {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", socket.display()))
        }
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding API socket {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "API listening");
    axum::serve(listener, router(agent))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    Ok(())
}

//! Deployments and services: `POST /v1/deployments` (deploy, dry-run), `DELETE
//! /v1/deployments/{name}` (undeploy), `GET /v1/services`, `POST /v1/services/scale`,
//! `GET /v1/events` (JSON lines), plus the opt-in Prometheus listener and the API latency layer.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zlayer_agent::services::{DeployRequest, DeployResponse, ServiceInfo};

use super::{ApiResult, AppState};

/// Body of `POST /v1/services/scale`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScaleRequest {
    /// `deployment/service` or a service name unique across deployments.
    pub service: String,
    pub replicas: u32,
}

/// Answer of `scale`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScaleResponse {
    pub deployment: String,
    pub service: String,
    pub from: u32,
    pub to: u32,
}

/// Answer of `undeploy`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UndeployResponse {
    pub deployment: String,
    /// Containers stopped and removed.
    pub removed: usize,
}

#[utoipa::path(post, path = "/v1/deployments", tag = "services", operation_id = "deploy",
    request_body = DeployRequest,
    responses((status = 200, description = "The plan, applied unless `dry_run`", body = DeployResponse)))]
pub async fn deploy(
    State(agent): State<AppState>,
    Json(req): Json<DeployRequest>,
) -> ApiResult<Json<DeployResponse>> {
    Ok(Json(agent.deploy(req).await?))
}

#[utoipa::path(delete, path = "/v1/deployments/{name}", tag = "services", operation_id = "undeploy",
    params(("name" = String, Path, description = "Deployment name")),
    responses((status = 200, description = "Its containers were stopped and removed", body = UndeployResponse)))]
pub async fn undeploy(
    State(agent): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<UndeployResponse>> {
    let removed = agent
        .undeploy(&name)
        .await
        .map_err(crate::error::ApiError)?;
    Ok(Json(UndeployResponse {
        deployment: name,
        removed,
    }))
}

#[utoipa::path(get, path = "/v1/services", tag = "services", operation_id = "service_list",
    responses((status = 200, description = "Every service of every deployment", body = Vec<ServiceInfo>)))]
pub async fn list(State(agent): State<AppState>) -> ApiResult<Json<Vec<ServiceInfo>>> {
    Ok(Json(agent.list_services().await?))
}

#[utoipa::path(post, path = "/v1/services/scale", tag = "services", operation_id = "service_scale",
    request_body = ScaleRequest,
    responses((status = 200, description = "The new replica count", body = ScaleResponse)))]
pub async fn scale(
    State(agent): State<AppState>,
    Json(req): Json<ScaleRequest>,
) -> ApiResult<Json<ScaleResponse>> {
    let (deployment, service, from) = agent.scale(&req.service, req.replicas).await?;
    Ok(Json(ScaleResponse {
        deployment,
        service,
        from,
        to: req.replicas,
    }))
}

/// `GET /v1/events`: every event from now on, one JSON object per line, until the client
/// goes away. A subscriber that falls behind gets a `{"kind":"stream","action":"lagged"}` line.
#[utoipa::path(get, path = "/v1/events", tag = "services", operation_id = "events",
    responses((status = 200, description = "Every event from now on, one JSON object per line, until the client goes away", body = zlayer_agent::services::events::Event, content_type = "application/x-ndjson")))]
pub async fn events(State(agent): State<AppState>) -> Response {
    let mut rx = agent.services().events.subscribe();
    let (tx, response) =
        crate::server::json_lines_response::<zlayer_agent::services::events::Event>();
    tokio::spawn(async move {
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    zlayer_agent::services::events::Event::new("stream", "lagged", "", "")
                        .with("missed", n)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            if tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    response
}

/// Middleware recording each request's latency by route pattern.
pub async fn track_latency(State(agent): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    // Streaming endpoints (events, logs -f) count until their headers, not their whole life.
    agent
        .services()
        .metrics
        .api_request(&method, &route, start.elapsed());
    resp
}

/// Serves `GET /metrics` (Prometheus text format) on `addr` until the process ends. Opt-in
/// (`daemon --metrics-addr`): the API socket stays the only control surface.
pub async fn serve_metrics(addr: SocketAddr, agent: AppState) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(agent): State<AppState>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    agent.metrics_text(),
                )
                    .into_response()
            }),
        )
        .with_state(agent);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics listener {addr}: {e}"))?;
    tracing::info!(%addr, "metrics listening");
    axum::serve(crate::capped_listener::CappedListener::new(listener), app).await?;
    Ok(())
}

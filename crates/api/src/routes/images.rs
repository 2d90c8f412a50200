//! `/v1/images...`: pull (streamed progress), list, inspect, remove, prune, load, unpack.

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zlayer_agent::images::{ImageDetails, ImageSummary, PruneReport, PullEvent, RemoveReport};

use zlayer_agent::image_filter::ImageFilter;

use super::{ApiResult, AppState};
use crate::server::json_lines_response;
use crate::types::UnpackResponse;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PullRequest {
    pub reference: String,
    #[serde(default)]
    pub platform: Option<String>,
}

/// One line of the pull stream: a progress event, the final summary, or the error that
/// ended the pull.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PullLine {
    Progress(PullEvent),
    Done {
        done: zlayer_agent::images::PullSummary,
    },
    Failed {
        error: String,
        kind: zlayer_agent::ErrorKind,
    },
}

#[utoipa::path(post, path = "/v1/images/pull", tag = "images", operation_id = "image_pull",
    request_body = PullRequest,
    responses((status = 200, description = "Progress, one JSON object per line; the last line is the summary or the error that ended the pull", body = PullLine, content_type = "application/x-ndjson")))]
pub async fn pull(State(agent): State<AppState>, Json(req): Json<PullRequest>) -> Response {
    let (tx, response) = json_lines_response::<PullLine>();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let result = agent
            .pull_image(&req.reference, req.platform.as_deref(), move |event| {
                // A client that went away just stops seeing progress; the pull goes on.
                let _ = progress_tx.try_send(PullLine::Progress(event));
            })
            .await;
        let last = match result {
            Ok(done) => PullLine::Done { done },
            Err(e) => PullLine::Failed {
                error: e.message,
                kind: e.kind,
            },
        };
        let _ = tx.send(last).await;
    });
    response
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageListQuery {
    /// docker's filters as JSON: `{"reference":["busy*"],"dangling":["true"],"label":["k=v"]}`;
    /// values of one key OR, keys AND (labels: all must match).
    pub filters: Option<String>,
}

#[utoipa::path(get, path = "/v1/images", tag = "images", operation_id = "image_list",
    params(ImageListQuery),
    responses((status = 200, description = "Every image, or those passing `filters`", body = Vec<ImageSummary>)))]
pub async fn list(
    State(agent): State<AppState>,
    Query(q): Query<ImageListQuery>,
) -> ApiResult<Json<Vec<ImageSummary>>> {
    let filter = match q.filters.as_deref() {
        Some(json) if !json.trim().is_empty() => ImageFilter::from_json(json)?,
        _ => ImageFilter::default(),
    };
    Ok(Json(agent.list_images_matching(filter).await?))
}

#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RefQuery {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default)]
    pub force: bool,
}

/// The query of `GET /v1/images/inspect`.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InspectQuery {
    /// A name (`busybox`, `docker.io/library/busybox:latest`), a digest or an id prefix.
    #[serde(rename = "ref")]
    pub reference: String,
}

#[utoipa::path(get, path = "/v1/images/inspect", tag = "images", operation_id = "image_inspect",
    params(InspectQuery),
    responses((status = 200, description = "The image", body = ImageDetails)))]
pub async fn inspect(
    State(agent): State<AppState>,
    Query(q): Query<InspectQuery>,
) -> ApiResult<Json<ImageDetails>> {
    Ok(Json(agent.inspect_image(&q.reference).await?))
}

#[utoipa::path(delete, path = "/v1/images", tag = "images", operation_id = "image_remove",
    params(RefQuery),
    responses((status = 200, description = "What was untagged and deleted", body = RemoveReport)))]
pub async fn remove(
    State(agent): State<AppState>,
    Query(q): Query<RefQuery>,
) -> ApiResult<Json<RemoveReport>> {
    Ok(Json(agent.remove_image(&q.reference, q.force).await?))
}

#[utoipa::path(post, path = "/v1/images/prune", tag = "images", operation_id = "image_prune",
    responses((status = 200, description = "What was removed", body = PruneReport)))]
pub async fn prune(State(agent): State<AppState>) -> ApiResult<Json<PruneReport>> {
    agent.prune_images().await.map(Json).map_err(Into::into)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoadRequest {
    /// A path on the daemon's machine: an OCI layout directory, an OCI archive or a docker-save tar.
    pub path: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoadResponse {
    pub loaded: Vec<String>,
}

#[utoipa::path(post, path = "/v1/images/load", tag = "images", operation_id = "image_load",
    request_body = LoadRequest,
    responses((status = 200, description = "The images loaded", body = LoadResponse)))]
pub async fn load(
    State(agent): State<AppState>,
    Json(req): Json<LoadRequest>,
) -> ApiResult<Json<LoadResponse>> {
    let loaded = agent.load_images(std::path::Path::new(&req.path)).await?;
    Ok(Json(LoadResponse { loaded }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UnpackRequest {
    pub reference: String,
    pub dir: String,
}

#[utoipa::path(post, path = "/v1/images/unpack", tag = "images", operation_id = "image_unpack",
    request_body = UnpackRequest,
    responses((status = 200, description = "The image's root filesystem was written to `dir`", body = UnpackResponse)))]
pub async fn unpack(
    State(agent): State<AppState>,
    Json(req): Json<UnpackRequest>,
) -> ApiResult<Json<UnpackResponse>> {
    agent
        .unpack_image(&req.reference, std::path::Path::new(&req.dir))
        .await?;
    Ok(Json(UnpackResponse { dir: req.dir }))
}

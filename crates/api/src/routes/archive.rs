//! `/v1/containers/{id}/archive`: `cp` on the wire, as docker's archive API: `GET` a path of
//! the container as a tar stream, `PUT` a tar stream to unpack into a directory of it, and
//! `GET .../archive/stat` for what a path is (the client applies docker's path rules with it).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use zlayer_agent::containers::{CopyResult, PathStat};

use super::{ApiResult, AppState};

/// The path header of a `GET .../archive`: the source's stat as JSON, so a client needs no
/// second request to learn what it is receiving.
pub const PATH_STAT_HEADER: &str = "x-zlayer-path-stat";

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// The path inside the container (resolved inside its root filesystem).
    pub path: String,
    /// Follow the path's final symlink (`cp -L`), inside the container's root.
    #[serde(default)]
    pub follow_link: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExtractQuery {
    /// The directory of the container to unpack into; it must exist.
    pub path: String,
    /// Keep the archive's uid/gid (`cp -a`); otherwise files are owned by root.
    #[serde(default)]
    pub copy_uid_gid: bool,
}

/// What a path in the container is.
#[utoipa::path(get, path = "/v1/containers/{id}/archive/stat", tag = "containers", operation_id = "container_path_stat",
    params(("id" = String, Path, description = "Container id, id prefix or name"), ArchiveQuery),
    responses((status = 200, description = "The path's stat", body = PathStat)))]
pub async fn stat(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> ApiResult<Json<PathStat>> {
    Ok(Json(
        agent
            .container_path_stat(&id, &q.path, q.follow_link)
            .await?,
    ))
}

/// A path of the container as a tar whose top entry is named after the path's last component.
#[utoipa::path(get, path = "/v1/containers/{id}/archive", tag = "containers", operation_id = "container_archive_get",
    params(("id" = String, Path, description = "Container id, id prefix or name"), ArchiveQuery),
    responses((status = 200, description = "A tar stream; header `X-Zlayer-Path-Stat` is the source's stat as JSON", body = [u8], content_type = "application/x-tar")))]
pub async fn get(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ArchiveQuery>,
) -> ApiResult<Response> {
    let (stat, tar) = agent
        .copy_from_container(&id, &q.path, q.follow_link)
        .await?;
    let stat = serde_json::to_string(&stat).unwrap_or_default();
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar");
    // A name that is not valid in a header (non-UTF-8 shown lossily is still ASCII-safe JSON
    // only if escaped): leave the header out rather than fail the copy.
    if let Ok(v) = axum::http::HeaderValue::from_str(&stat) {
        resp = resp.header(PATH_STAT_HEADER, v);
    }
    Ok(resp
        .body(Body::from_stream(tar))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

/// Unpacks the tar in the request body into a directory of the container.
#[utoipa::path(put, path = "/v1/containers/{id}/archive", tag = "containers", operation_id = "container_archive_put",
    params(("id" = String, Path, description = "Container id, id prefix or name"), ExtractQuery),
    // Documented as octet-stream (any content type is accepted): the body is bytes, read as a
    // tar; `application/x-tar` is what docker's clients send.
    request_body(content = [u8], content_type = "application/octet-stream", description = "A tar stream"),
    responses((status = 200, description = "Unpacked", body = CopyResult)))]
pub async fn put(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ExtractQuery>,
    body: Body,
) -> ApiResult<Json<CopyResult>> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    Ok(Json(
        agent
            .copy_to_container(&id, &q.path, Box::pin(stream), q.copy_uid_gid)
            .await?,
    ))
}

//! `/v1/containers...`: create (run), list, inspect, stop, kill, remove, wait, logs, exec,
//! attach, stats.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use futures_util::{stream, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use zlayer_agent::containers::log_time::log_window;
use zlayer_agent::containers::ContainerFilter;
use zlayer_agent::containers::{
    ContainerDetails, ContainerStats, ContainerSummary, CreateRequest, Created, ExecSpec,
    LogOptions, OutputStream, Session, SessionEvent, WaitResult,
};
use zlayer_agent::AgentError;

use super::{ApiResult, AppState};
use crate::frames;
use crate::types::{KilledResponse, RemovedResponse, StoppedResponse};

#[utoipa::path(post, path = "/v1/containers", tag = "containers", operation_id = "container_create",
    request_body = CreateRequest,
    responses((status = 201, description = "Created and started", body = Created)))]
pub async fn create(
    State(agent): State<AppState>,
    Json(req): Json<CreateRequest>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let created = agent.create_container(req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    pub all: bool,
    /// docker's filters as JSON: `{"name":["web"],"status":["exited"]}`; keys `ancestor`,
    /// `id`, `label`, `name`, `status`; values of one key OR, keys AND (labels: all must match).
    pub filters: Option<String>,
}

#[utoipa::path(get, path = "/v1/containers", tag = "containers", operation_id = "container_list",
    params(ListQuery),
    responses((status = 200, description = "Containers, running ones only unless `all`", body = Vec<ContainerSummary>)))]
pub async fn list(
    State(agent): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    let filter = match q.filters.as_deref() {
        Some(json) if !json.trim().is_empty() => ContainerFilter::from_json(json)?,
        _ => ContainerFilter::default(),
    };
    Ok(Json(agent.list_containers(q.all, filter).await?))
}

#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers", operation_id = "container_inspect",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    responses((status = 200, description = "The container", body = ContainerDetails)))]
pub async fn inspect(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerDetails>> {
    Ok(Json(agent.inspect_container(&id).await?))
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StopQuery {
    /// Seconds of grace before SIGKILL.
    pub t: Option<u64>,
}

#[utoipa::path(post, path = "/v1/containers/{id}/stop", tag = "containers", operation_id = "container_stop",
    params(("id" = String, Path, description = "Container id, id prefix or name"), StopQuery),
    responses((status = 200, description = "Stopped", body = StoppedResponse)))]
pub async fn stop(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> ApiResult<Json<StoppedResponse>> {
    agent.stop_container(&id, q.t).await?;
    Ok(Json(StoppedResponse { stopped: id }))
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KillQuery {
    pub signal: Option<String>,
}

#[utoipa::path(post, path = "/v1/containers/{id}/kill", tag = "containers", operation_id = "container_kill",
    params(("id" = String, Path, description = "Container id, id prefix or name"), KillQuery),
    responses((status = 200, description = "Signalled", body = KilledResponse)))]
pub async fn kill(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> ApiResult<Json<KilledResponse>> {
    agent.kill_container(&id, q.signal.as_deref()).await?;
    Ok(Json(KilledResponse { killed: id }))
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers", operation_id = "container_remove",
    params(("id" = String, Path, description = "Container id, id prefix or name"), RemoveQuery),
    responses((status = 200, description = "Removed", body = RemovedResponse)))]
pub async fn remove(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<Json<RemovedResponse>> {
    agent.remove_container(&id, q.force).await?;
    Ok(Json(RemovedResponse { removed: id }))
}

#[utoipa::path(post, path = "/v1/containers/{id}/wait", tag = "containers", operation_id = "container_wait",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    responses((status = 200, description = "The container exited", body = WaitResult)))]
pub async fn wait(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<WaitResult>> {
    Ok(Json(agent.wait_container(&id).await?))
}

#[utoipa::path(get, path = "/v1/containers/{id}/stats", tag = "containers", operation_id = "container_stats",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    responses((status = 200, description = "Resource usage now", body = ContainerStats)))]
pub async fn stats(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerStats>> {
    Ok(Json(agent.container_stats(&id).await?))
}

/// A chunked response of frames (see [`frames`]).
fn framed_response(frames: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "application/vnd.zlayer.multiplexed-stream",
        )
        .body(Body::from_stream(
            frames.map(Ok::<_, std::convert::Infallible>),
        ))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn stream_id(s: OutputStream) -> u8 {
    match s {
        OutputStream::Stdout => frames::STDOUT,
        OutputStream::Stderr => frames::STDERR,
    }
}

fn error_frame(message: &str) -> Bytes {
    let msg = serde_json::json!({ "error": message }).to_string();
    frames::encode(frames::ERROR, msg.as_bytes())
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    #[serde(default)]
    pub follow: bool,
    pub tail: Option<usize>,
    #[serde(default)]
    pub timestamps: bool,
    /// Only lines at or after this time: RFC 3339, Unix seconds (`1764790396.5`) or a
    /// duration before now (`10m`), as docker.
    pub since: Option<String>,
    /// Only lines at or before this time (same forms); a follow ends then.
    pub until: Option<String>,
    /// With `follow`: after the last line, wait for the container as `wait` does (for
    /// `--rm` that includes removing it) and end with a status frame carrying the
    /// [`WaitResult`]. Saves an attached `run` a round trip after the output ends.
    #[serde(default)]
    pub wait: bool,
}

/// Log lines as stdout/stderr frames; with `follow`, until the container exits (or the
/// client goes away); with `wait` too, then a status frame (JSON [`WaitResult`]).
#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers", operation_id = "container_logs",
    params(("id" = String, Path, description = "Container id, id prefix or name"), LogsQuery),
    responses((status = 200, description = "Frames: 1 byte stream id (1 stdout, 2 stderr, 3 status, 4 error), 4 bytes big-endian length, payload", body = [u8], content_type = "application/vnd.zlayer.multiplexed-stream")))]
pub async fn logs(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let (since, until) = log_window(q.since.as_deref(), q.until.as_deref())?;
    let opts = LogOptions {
        follow: q.follow,
        tail: q.tail,
        since,
        until,
    };
    let lines = agent.container_logs(&id, opts).await?;
    let timestamps = q.timestamps;
    let frames = lines.map(move |line| match line {
        Ok(entry) => frames::encode(stream_id(entry.stream), &entry.format(timestamps)),
        Err(e) => error_frame(&e.message),
    });
    if !(q.follow && q.wait) {
        return Ok(framed_response(frames));
    }
    // Polled only after the last line went out: a client that went away drops the body,
    // and with it this wait.
    let status = stream::once(async move {
        match agent.wait_container(&id).await {
            Ok(res) => match serde_json::to_vec(&res) {
                Ok(json) => frames::encode(frames::STATUS, &json),
                Err(e) => error_frame(&e.to_string()),
            },
            Err(e) => error_frame(&e.message),
        }
    });
    Ok(framed_response(frames.chain(status)))
}

/// The query of `exec`: the process spec travels as JSON in `spec`, so the request body can be
/// the process's stdin.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecQuery {
    /// The process to run: an `ExecSpec` as JSON (`{"args": ["sh"], "stdin": true}`).
    pub spec: String,
}

/// Runs a process in the container. Request body: its stdin (when `spec.stdin`). Response:
/// stdout/stderr frames, then a status frame with the exit code.
#[utoipa::path(post, path = "/v1/containers/{id}/exec", tag = "containers", operation_id = "container_exec",
    params(("id" = String, Path, description = "Container id, id prefix or name"), ExecQuery),
    request_body(content = [u8], content_type = "application/octet-stream", description = "The process's stdin (read when the spec's `stdin` is true)"),
    responses((status = 200, description = "stdout/stderr frames, then a status frame `{\"exit_code\": N}`", body = [u8], content_type = "application/vnd.zlayer.multiplexed-stream")))]
pub async fn exec(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ExecQuery>,
    body: Body,
) -> ApiResult<Response> {
    let spec: ExecSpec = serde_json::from_str(&q.spec)
        .map_err(|e| AgentError::invalid(format!("bad exec spec: {e}")).with_source(e))?;
    let session = agent.exec_container(&id, spec).await?;
    Ok(session_response(session, body))
}

/// Forwards the request body to the container's stdin (for `run -i`); the response ends with
/// the container's exit status. Output is read through `logs -f`.
#[utoipa::path(post, path = "/v1/containers/{id}/attach", tag = "containers", operation_id = "container_attach",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    request_body(content = [u8], content_type = "application/octet-stream", description = "Forwarded to the container's stdin"),
    responses((status = 200, description = "A status frame with the exit code once the container exits", body = [u8], content_type = "application/vnd.zlayer.multiplexed-stream")))]
pub async fn attach(
    State(agent): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    // Attach output duplicates what `logs -f` shows: only the exit is forwarded.
    let session = agent.attach_container(&id, false).await?;
    Ok(session_response(session, body))
}

/// The request body into the session's stdin (when it has one); the session's events out as
/// frames, ending with the exit status or an error.
fn session_response(mut session: Session, body: Body) -> Response {
    if let Some(stdin) = session.take_stdin() {
        tokio::spawn(async move {
            let mut data = body.into_data_stream();
            while let Some(Ok(chunk)) = data.next().await {
                if stdin.write(chunk).await.is_err() {
                    return;
                }
            }
            stdin.close();
        });
    }
    let frames = session.map(|event| match event {
        Ok(SessionEvent::Output { stream, data }) => frames::encode(stream_id(stream), &data),
        Ok(SessionEvent::Exit { exit_code, .. }) => {
            let msg = serde_json::json!({ "exit_code": exit_code }).to_string();
            frames::encode(frames::STATUS, msg.as_bytes())
        }
        Err(e) => error_frame(&e.message),
    });
    framed_response(frames)
}

//! `/v1/containers...`: create (run), list, inspect, stop, kill, remove, wait, logs, exec,
//! attach, stats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::IntoParams;
use zlayer_agent::containers::{
    ContainerDetails, ContainerSummary, CreateRequest, Created, WaitResult,
};
use zlayer_runtime::ExecSpec;
use zlayer_runtime::Stream;
use zlayer_runtime::StreamEvent;

use super::{blocking, ApiResult, AppState};
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
}

#[utoipa::path(get, path = "/v1/containers", tag = "containers", operation_id = "container_list",
    params(ListQuery),
    responses((status = 200, description = "Containers, running ones only unless `all`", body = Vec<ContainerSummary>)))]
pub async fn list(
    State(agent): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    blocking(move || agent.list_containers(q.all))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers", operation_id = "container_inspect",
    params(("id" = String, Path, description = "Container id, id prefix or name")),
    responses((status = 200, description = "The container", body = ContainerDetails)))]
pub async fn inspect(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerDetails>> {
    blocking(move || agent.inspect_container(&id))
        .await
        .map(Json)
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
    responses((status = 200, description = "Resource usage now", body = zlayer_runtime::ContainerStats)))]
pub async fn stats(
    State(agent): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<zlayer_runtime::ContainerStats>> {
    blocking(move || agent.container_stats(&id)).await.map(Json)
}

fn framed_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "application/vnd.zlayer.multiplexed-stream",
        )
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn stream_id(s: Stream) -> u8 {
    match s {
        Stream::Stdout => frames::STDOUT,
        Stream::Stderr => frames::STDERR,
    }
}

#[derive(Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    #[serde(default)]
    pub follow: bool,
    pub tail: Option<usize>,
    #[serde(default)]
    pub timestamps: bool,
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
    let cancel = Arc::new(AtomicBool::new(false));
    let mut reader = {
        let agent = agent.clone();
        let cancel = cancel.clone();
        let id = id.clone();
        blocking(move || agent.open_logs(&id, q.follow, q.tail, cancel)).await?
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let status_tx = tx.clone();
    // Says whether the client is still there (true) or went away (false). Sent before the
    // reader is dropped: closing a follower's inotify descriptor waits for an SRCU grace
    // period in the kernel (5-15 ms here), which must not sit between the container's exit
    // and the status frame of an attached `run`.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<bool>();
    tokio::task::spawn_blocking(move || {
        let client_there = loop {
            match reader.next_entry() {
                Ok(Some(entry)) => {
                    let frame =
                        frames::encode(stream_id(entry.stream), &entry.format(q.timestamps));
                    if tx.blocking_send(frame).is_err() {
                        cancel.store(true, Ordering::Relaxed);
                        break false;
                    }
                }
                Ok(None) => break true,
                Err(e) => {
                    let msg =
                        serde_json::json!({"error": format!("reading logs: {e}")}).to_string();
                    let _ = tx.blocking_send(frames::encode(frames::ERROR, msg.as_bytes()));
                    break true;
                }
            }
        };
        // Without `wait` the response ends with the last sender: before the slow drop too.
        drop(tx);
        let _ = done_tx.send(client_there);
        drop(reader);
    });
    if q.follow && q.wait {
        tokio::spawn(async move {
            if !matches!(done_rx.await, Ok(true)) || status_tx.is_closed() {
                return;
            }
            let frame = match agent.wait_container(&id).await {
                Ok(res) => match serde_json::to_vec(&res) {
                    Ok(json) => frames::encode(frames::STATUS, &json),
                    Err(e) => error_frame(&e.to_string()),
                },
                Err(e) => error_frame(&e.message),
            };
            let _ = status_tx.send(frame).await;
        });
    }
    Ok(framed_response(rx))
}

fn error_frame(message: &str) -> Bytes {
    let msg = serde_json::json!({ "error": message }).to_string();
    frames::encode(frames::ERROR, msg.as_bytes())
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
        .map_err(|e| zlayer_agent::AgentError::invalid(format!("bad exec spec: {e}")))?;
    zlayer_runtime::validate::exec_spec(&spec).map_err(zlayer_agent::AgentError::invalid)?;
    let (_, client) = {
        let agent = agent.clone();
        blocking(move || agent.running_shim(&id)).await?
    };
    let want_stdin = spec.stdin;
    // The exec'd process joins the container's cgroup: see attach_lock.
    zlayer_runtime::cgroups::attach_lock::warm_in_background();
    let session = tokio::task::spawn_blocking(move || client.exec(&spec))
        .await
        .map_err(|e| zlayer_agent::AgentError::internal(e.to_string()))?
        .map_err(|e| {
            let code = e.exit_code();
            zlayer_agent::AgentError::invalid(e.to_string()).with_exit_code(Some(code))
        })?;
    Ok(pump_session(
        SessionKind::Exec(session),
        want_stdin.then_some(body),
    ))
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
    let (_, client) = {
        let agent = agent.clone();
        blocking(move || agent.running_shim(&id)).await?
    };
    let session = tokio::task::spawn_blocking(move || client.attach(true))
        .await
        .map_err(|e| zlayer_agent::AgentError::internal(e.to_string()))?
        .map_err(|e| zlayer_agent::AgentError::internal(e.to_string()))?;
    Ok(pump_session(SessionKind::Attach(session), Some(body)))
}

enum SessionKind {
    Exec(zlayer_runtime::ExecSession),
    Attach(zlayer_runtime::AttachSession),
}

impl SessionKind {
    fn next_event(&mut self) -> Result<Option<StreamEvent>, zlayer_runtime::ClientError> {
        match self {
            SessionKind::Exec(s) => s.next_event(),
            SessionKind::Attach(s) => s.next_event(),
        }
    }
    fn stdin(&self) -> Result<zlayer_runtime::StdinWriter, zlayer_runtime::ClientError> {
        match self {
            SessionKind::Exec(s) => s.stdin(),
            SessionKind::Attach(s) => s.stdin(),
        }
    }
    /// Attach output duplicates what `logs -f` shows; only its exit is forwarded.
    fn forwards_output(&self) -> bool {
        matches!(self, SessionKind::Exec(_))
    }
}

fn pump_session(mut session: SessionKind, stdin: Option<Body>) -> Response {
    if let Some(body) = stdin {
        match session.stdin() {
            Ok(mut writer) => {
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let mut data = body.into_data_stream();
                    while let Some(Ok(chunk)) = handle.block_on(data.next()) {
                        if writer.write(&chunk).is_err() {
                            return;
                        }
                    }
                    let _ = writer.close();
                });
            }
            Err(e) => tracing::warn!("exec stdin: {e}"),
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let forward = session.forwards_output();
        loop {
            let frame = match session.next_event() {
                Ok(Some(StreamEvent::Output(s, data))) => {
                    if !forward {
                        continue;
                    }
                    frames::encode(stream_id(s), &data)
                }
                Ok(Some(StreamEvent::Exit { exit_code, .. })) => {
                    let msg = serde_json::json!({"exit_code": exit_code}).to_string();
                    let _ = tx.blocking_send(frames::encode(frames::STATUS, msg.as_bytes()));
                    return;
                }
                Ok(None) => {
                    let msg =
                        serde_json::json!({"error": "the container's shim went away"}).to_string();
                    let _ = tx.blocking_send(frames::encode(frames::ERROR, msg.as_bytes()));
                    return;
                }
                Err(e) => {
                    let msg = serde_json::json!({"error": e.to_string()}).to_string();
                    let _ = tx.blocking_send(frames::encode(frames::ERROR, msg.as_bytes()));
                    return;
                }
            };
            if tx.blocking_send(frame).is_err() {
                return;
            }
        }
    });
    framed_response(rx)
}

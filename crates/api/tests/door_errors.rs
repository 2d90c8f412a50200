//! One failure, one error kind, whichever door asks: the REST routes answer `exec`, `attach`
//! and `stats` of a missing or stopped container with the kind the agent's own calls return
//! (and the HTTP status the API maps that kind to). Before the agent owned the sessions, the
//! api's exec turned every shim failure into `invalid_input` while the agent said otherwise.
//!
//! Runs an agent on a temporary state directory; no container is started (the failures are
//! decided before a shim is asked), so it needs neither root nor a network namespace.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use zlayer_agent::config::FileConfig;
use zlayer_agent::containers::{ContainerRecord, ContainerState, ExecSpec};
use zlayer_agent::{Agent, AgentConfig, AgentError, ErrorKind, Paths};

/// `{"args":["true"]}`, percent-encoded for the `spec` query parameter.
const TRUE_SPEC: &str = "%7B%22args%22%3A%5B%22true%22%5D%7D";
/// `{"args":[]}`: no command.
const EMPTY_SPEC: &str = "%7B%22args%22%3A%5B%5D%7D";

fn open_agent(dir: &std::path::Path) -> Arc<Agent> {
    let config = AgentConfig {
        paths: Paths::new(dir.join("root"), dir.join("state")),
        file: FileConfig::default(),
        shim_command: Vec::new(),
    };
    Arc::new(Agent::open(config).expect("opening an agent on a temporary directory"))
}

/// A container recorded in `state`, with no shim behind it.
fn record(agent: &Agent, name: &str, id: &str, state: ContainerState) {
    record_with_spec(agent, name, id, state, serde_json::json!({}));
}

fn record_with_spec(
    agent: &Agent,
    name: &str,
    id: &str,
    state: ContainerState,
    spec: serde_json::Value,
) {
    let record = ContainerRecord {
        id: format!("{id:0>64}"),
        name: name.to_string(),
        image: "busybox".into(),
        image_id: "sha256:00".into(),
        created_at: "2026-12-03T00:00:00Z".into(),
        spec,
        labels: Default::default(),
        state,
        pid: None,
        exit_code: Some(0),
        oom_killed: false,
        error: None,
        started_at: Some("2026-12-03T00:00:01Z".into()),
        finished_at: Some("2026-12-03T00:00:02Z".into()),
        auto_remove: false,
    };
    agent
        .containers()
        .insert(&record)
        .expect("recording a container");
}

fn record_exited(agent: &Agent, name: &str) {
    record(agent, name, "e1", ContainerState::Exited);
}

/// The status and the JSON `kind` the REST API answers `method uri` with.
async fn api_answer(agent: &Arc<Agent>, method: &str, uri: &str) -> (StatusCode, ErrorKind) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let resp = zlayer_api::server::router(Arc::clone(agent))
        .oneshot(req)
        .await
        .expect("the router answers");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .expect("body");
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{uri}: error body is not JSON ({e}): {body:?}"));
    let kind: ErrorKind = serde_json::from_value(json["kind"].clone())
        .unwrap_or_else(|e| panic!("{uri}: no error kind ({e}): {json}"));
    (status, kind)
}

fn kind_of<T>(r: Result<T, AgentError>, what: &str) -> ErrorKind {
    match r {
        Ok(_) => panic!("{what} succeeded on a container that cannot run it"),
        Err(e) => e.kind,
    }
}

fn exec_spec(args: &[&str]) -> ExecSpec {
    ExecSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..ExecSpec::default()
    }
}

/// Asks every door about `key` and checks they agree on `expected`.
async fn every_door_says(agent: &Arc<Agent>, key: &str, expected: ErrorKind) {
    let stats = kind_of(agent.container_stats(key).await, "stats");
    let exec = kind_of(
        agent.exec_container(key, exec_spec(&["true"])).await,
        "exec",
    );
    let attach = kind_of(agent.attach_container(key, false).await, "attach");
    assert_eq!(stats, expected, "agent stats of {key}");
    assert_eq!(exec, expected, "agent exec in {key}");
    assert_eq!(attach, expected, "agent attach to {key}");

    let status = zlayer_api::error::status_for(expected);
    let answers = [
        ("GET", format!("/v1/containers/{key}/stats")),
        (
            "POST",
            format!("/v1/containers/{key}/exec?spec={TRUE_SPEC}"),
        ),
        ("POST", format!("/v1/containers/{key}/attach")),
    ];
    for (method, uri) in answers {
        assert_eq!(
            api_answer(agent, method, &uri).await,
            (status, expected),
            "{method} {uri}"
        );
    }
}

#[tokio::test]
async fn missing_container_is_not_found_at_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let agent = open_agent(dir.path());
    every_door_says(&agent, "nosuch", ErrorKind::NotFound).await;
}

#[tokio::test]
async fn stopped_container_is_a_conflict_at_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let agent = open_agent(dir.path());
    record_exited(&agent, "stopped1");
    every_door_says(&agent, "stopped1", ErrorKind::Conflict).await;
}

/// Recorded running, but its shim answers that nothing runs (the container exited between the
/// check and the call): the runtime's "not running", a conflict as the check's own answer is.
/// Before, the api's exec called this `invalid_input` and its attach `internal`.
#[tokio::test]
async fn shim_saying_not_running_is_a_conflict_at_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let agent = open_agent(dir.path());
    record(&agent, "ended1", "a1", ContainerState::Running);
    let exec = kind_of(
        agent.exec_container("ended1", exec_spec(&["true"])).await,
        "exec",
    );
    let attach = kind_of(agent.attach_container("ended1", false).await, "attach");
    assert_eq!(exec, ErrorKind::Conflict, "agent exec");
    assert_eq!(attach, ErrorKind::Conflict, "agent attach");
    let stopped_stats = {
        record_exited(&agent, "stopped1");
        kind_of(agent.container_stats("stopped1").await, "stats")
    };
    assert_eq!(exec, stopped_stats, "exec and the query path agree");
    for (method, uri) in [
        (
            "POST",
            format!("/v1/containers/ended1/exec?spec={TRUE_SPEC}"),
        ),
        ("POST", "/v1/containers/ended1/attach".to_string()),
    ] {
        assert_eq!(
            api_answer(&agent, method, &uri).await,
            (StatusCode::CONFLICT, ErrorKind::Conflict),
            "{method} {uri}"
        );
    }
}

#[tokio::test]
async fn exec_without_a_command_is_invalid_at_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let agent = open_agent(dir.path());
    record_exited(&agent, "stopped1");
    let agent_kind = kind_of(
        agent.exec_container("stopped1", exec_spec(&[])).await,
        "exec of no command",
    );
    assert_eq!(agent_kind, ErrorKind::InvalidInput);
    let uri = format!("/v1/containers/stopped1/exec?spec={EMPTY_SPEC}");
    assert_eq!(
        api_answer(&agent, "POST", &uri).await,
        (StatusCode::BAD_REQUEST, ErrorKind::InvalidInput)
    );
}

/// `volume rm` of a volume a container names is refused at both doors, by the same check
/// (it moved from the route into the agent), and succeeds once the container is gone.
#[tokio::test]
async fn a_volume_in_use_is_a_conflict_at_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let agent = open_agent(dir.path());
    let created = agent.create_volume("cache").await.expect("volume create");
    assert!(created.mountpoint.ends_with("cache/_data"), "{created:?}");
    record_with_spec(
        &agent,
        "user1",
        "b1",
        ContainerState::Exited,
        serde_json::json!({"image": "busybox", "volumes": ["cache:/data"]}),
    );
    let err = agent
        .remove_volume("cache")
        .await
        .expect_err("volume in use");
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message.contains("user1"),
        "names the user: {}",
        err.message
    );
    assert_eq!(
        api_answer(&agent, "DELETE", "/v1/volumes/cache").await,
        (StatusCode::CONFLICT, ErrorKind::Conflict)
    );
    agent
        .containers()
        .delete(&format!("{:0>64}", "b1"))
        .expect("forgetting the container");
    agent.remove_volume("cache").await.expect("volume rm");
    assert!(agent.list_volumes().await.unwrap().is_empty());
}

//! Services end to end: a real daemon, real containers from the busybox fixture. Every service
//! runs with `network: none` so tests never compete for ports.

mod common;

use std::time::{Duration, Instant};

use common::{daemon_with_busybox, eventually, run, TestDaemon};
use serde_json::Value;

/// A command that stops promptly on SIGTERM (a bare `sleep` as PID 1 ignores it).
const IDLE: &str = r#"[sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.2; done"]"#;

fn deploy(d: &TestDaemon, name: &str, yaml: &str) -> String {
    let path = d.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    d.ok(&["deploy", &path.display().to_string()])
}

fn services(d: &TestDaemon) -> Vec<Value> {
    serde_json::from_str(&d.ok(&["services", "--format", "json"])).unwrap()
}

fn service(d: &TestDaemon, name: &str) -> Value {
    services(d)
        .into_iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// Running containers (name, id, status) whose name starts with `prefix`.
fn running(d: &TestDaemon, prefix: &str) -> Vec<(String, String, String)> {
    let ps: Vec<Value> = serde_json::from_str(&d.ok(&["ps", "--format", "json"])).unwrap();
    let mut v: Vec<(String, String, String)> = ps
        .into_iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn wait_state(d: &TestDaemon, svc: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = eventually(secs, || {
        last = service(d, svc);
        f(&last)
    });
    assert!(
        ok,
        "service {svc} never reached the expected state; last: {last:#}\n{}",
        d.log()
    );
    last
}

fn spec(image: &str, body: &str) -> String {
    format!(
        "version: v1\ndeployment: t\nservices:\n{}",
        body.replace("IMAGE", image)
    )
}

#[test]
fn killed_replica_restarts_after_backoff_and_undeploy_removes_everything() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let yaml = spec(&image, &format!(
        "  app:\n    image: IMAGE\n    network: none\n    command: {IDLE}\n    replicas: 2\n    restart: {{policy: always, backoff: {{initial: 2s, max: 10s}}}}\n"
    ));
    deploy(&d, "a.yaml", &yaml);
    wait_state(&d, "app", 30, |s| {
        s["running"] == 2 && s["state"] == "running"
    });
    // Deploying the same file again changes nothing.
    assert!(deploy(&d, "a.yaml", &yaml).contains("unchanged"));
    let before = running(&d, "t-app-0-");
    assert_eq!(before.len(), 1, "{before:?}");
    let killed_at = Instant::now();
    d.ok(&["kill", &before[0].0]);
    wait_state(&d, "app", 30, |s| s["restarts"] == 1 && s["running"] == 2);
    assert!(
        killed_at.elapsed() >= Duration::from_millis(1900),
        "restarted before the 2s backoff"
    );
    let after = running(&d, "t-app-0-");
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].1, before[0].1, "slot 0 runs a new container");
    assert_eq!(running(&d, "t-app-1-").len(), 1);
    // Scale and undeploy.
    d.ok(&["scale", "t/app", "3"]);
    wait_state(&d, "app", 30, |s| s["running"] == 3);
    d.ok(&["scale", "app", "1"]);
    assert!(eventually(30, || running(&d, "t-app-").len() == 1));
    d.ok(&["undeploy", "t"]);
    let ps_all: Vec<Value> =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).unwrap();
    assert!(ps_all.is_empty(), "{ps_all:?}");
    assert!(services(&d).is_empty());
}

#[test]
fn failing_command_health_check_replaces_the_replica() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    // The marker file exists only inside the container: the check must run there.
    let yaml = spec(
        &image,
        "  app:\n    image: IMAGE\n    network: none\n    command: [sh, -c, \"touch /tmp/ok; trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n    health: {check: {type: command, command: [test, -f, /tmp/ok]}, interval: 300ms, timeout: 2s, retries: 2, start_grace: 0s}\n    restart: {policy: always, backoff: {initial: 1s, max: 5s}}\n",
    );
    deploy(&d, "h.yaml", &yaml);
    wait_state(&d, "app", 30, |s| s["healthy"] == 1);
    let first = running(&d, "t-app-0-");
    assert!(
        first[0].2.contains("(healthy)"),
        "ps shows health: {first:?}"
    );
    d.ok(&["exec", &first[0].0, "rm", "/tmp/ok"]);
    wait_state(&d, "app", 30, |s| s["restarts"] == 1 && s["healthy"] == 1);
    let second = running(&d, "t-app-0-");
    assert_ne!(
        first[0].1, second[0].1,
        "the unhealthy replica was replaced"
    );
}

#[test]
fn rolling_update_to_good_then_broken_version() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let version = |v: &str, cmd: &str| {
        spec(&image, &format!(
            "  app:\n    image: IMAGE\n    network: none\n    env: {{VERSION: \"{v}\"}}\n    command: {cmd}\n    replicas: 2\n    health: {{check: {{type: command, command: [sh, -c, \"test $VERSION = {v}\"]}}, interval: 300ms, timeout: 2s, retries: 2, start_grace: 0s}}\n    update: {{order: start-first, health_timeout: 10s}}\n"
        ))
    };
    deploy(&d, "v1.yaml", &version("1", IDLE));
    wait_state(&d, "app", 30, |s| {
        s["healthy"] == 2 && s["state"] == "running"
    });
    let v1 = running(&d, "t-app-");
    // Good version: every replica replaced, one at a time, and healthy.
    let out = deploy(&d, "v2.yaml", &version("2", IDLE));
    assert!(out.contains("rolling update"), "{out}");
    let mut v2 = Vec::new();
    let replaced = eventually(60, || {
        v2 = running(&d, "t-app-");
        v2.len() == 2
            && v2
                .iter()
                .all(|n| n.2.contains("(healthy)") && !v1.iter().any(|o| o.1 == n.1))
    });
    assert!(replaced, "not all replaced: {v1:?} {v2:?}\n{}", d.log());
    wait_state(&d, "app", 30, |s| {
        s["healthy"] == 2 && s["state"] == "running"
    });
    // Broken version (exits at once): the rollout stops, the v2 replicas keep serving.
    deploy(&d, "v3.yaml", &version("3", "[sh, -c, \"exit 3\"]"));
    let s = wait_state(&d, "app", 60, |s| s["state"] == "rollout-failed");
    assert_eq!(s["running"], 2, "{s:#}");
    std::thread::sleep(Duration::from_secs(2));
    let ids = |v: &[(String, String, String)]| v.iter().map(|r| r.1.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&running(&d, "t-app-")),
        ids(&v2),
        "the v2 replicas keep serving"
    );
}

#[test]
fn daemon_sigkilled_mid_reconcile_converges_without_duplicates() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    let yaml = spec(
        &image,
        &format!(
            "  app:\n    image: IMAGE\n    network: none\n    command: {IDLE}\n    replicas: 4\n"
        ),
    );
    deploy(&d, "k.yaml", &yaml);
    // Kill the daemon while it is still starting replicas.
    eventually(10, || !running(&d, "t-app-").is_empty());
    d.kill9();
    d.spawn();
    wait_state(&d, "app", 30, |s| {
        s["running"] == 4 && s["state"] == "running"
    });
    let reps = running(&d, "t-app-");
    assert_eq!(reps.len(), 4, "{reps:?}");
    for slot in 0..4 {
        assert_eq!(
            running(&d, &format!("t-app-{slot}-")).len(),
            1,
            "slot {slot}: {reps:?}"
        );
    }
    // A restart with everything running adopts the replicas: nothing restarted. (Replicas
    // lost mid-create in the first crash were restarts; their count must not grow now.)
    let restarts = service(&d, "app")["restarts"].clone();
    d.kill9();
    d.spawn();
    std::thread::sleep(Duration::from_secs(2));
    let again = running(&d, "t-app-");
    assert_eq!(
        again.iter().map(|r| &r.1).collect::<Vec<_>>(),
        reps.iter().map(|r| &r.1).collect::<Vec<_>>()
    );
    assert_eq!(service(&d, "app")["restarts"], restarts);
}

#[test]
fn job_retries_with_exit_codes_and_cron_fires() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let yaml = spec(&image, "  fails:\n    kind: job\n    image: IMAGE\n    network: none\n    command: [sh, -c, \"exit 3\"]\n    retries: 2\n    backoff: {initial: 1s, max: 1s}\n  works:\n    kind: job\n    image: IMAGE\n    network: none\n    command: [sh, -c, \"echo done\"]\n  tick:\n    kind: cron\n    schedule: \"@every 1s\"\n    image: IMAGE\n    network: none\n    command: [sh, -c, \"echo tick\"]\n    history: 2\n");
    deploy(&d, "j.yaml", &yaml);
    let s = wait_state(&d, "fails", 40, |s| s["state"] == "failed");
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "1 try + 2 retries: {s:#}");
    assert!(runs.iter().all(|r| r["exit_code"] == 3), "{s:#}");
    let w = wait_state(&d, "works", 20, |s| s["state"] == "completed");
    assert_eq!(w["runs"][0]["exit_code"], 0);
    let c = wait_state(&d, "tick", 20, |s| {
        s["runs"]
            .as_array()
            .is_some_and(|r| r.iter().filter(|r| r["exit_code"] == 0).count() >= 2)
    });
    assert!(c["runs"].as_array().unwrap().len() <= 2, "history 2: {c:#}");
    // Undeploy ends the cron scheduler before it removes the runs: nothing fires afterwards.
    d.ok(&["undeploy", "t"]);
    for _ in 0..10 {
        let ps_all: Vec<Value> =
            serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).unwrap();
        assert!(
            ps_all.is_empty(),
            "left or started after undeploy: {ps_all:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn deploy_errors_carry_positions_and_dry_run_changes_nothing() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let path = d.dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        spec(&image, "  app:\n    image: IMAGE\n    replicsa: 2\n"),
    )
    .unwrap();
    let (code, _, err) = run(&d, &["deploy", &path.display().to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.yaml:6:5"), "{err}");
    // The default network (bridge) is refused with its position too (not available yet).
    std::fs::write(&path, spec(&image, "  app:\n    image: IMAGE\n")).unwrap();
    let (_, _, err) = run(&d, &["deploy", &path.display().to_string()]);
    assert!(
        err.contains("network") && err.contains("bad.yaml:"),
        "{err}"
    );
    std::fs::write(
        &path,
        spec(
            &image,
            "  app:\n    image: IMAGE\n    network: none\n    command: [true]\n",
        ),
    )
    .unwrap();
    let out = d.ok(&["deploy", "--dry-run", &path.display().to_string()]);
    assert!(
        out.contains("t/app (service): create (1 replicas)"),
        "{out}"
    );
    assert!(services(&d).is_empty());
}

#[test]
fn the_demo_deployment_runs() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/demo.yaml"
    ))
    .unwrap()
    .replace("127.0.0.1:5000/demo/busybox:latest", &image);
    let path = d.dir.path().join("demo.yaml");
    std::fs::write(&path, src).unwrap();
    d.ok(&["deploy", &path.display().to_string()]);
    let setup = wait_state(&d, "setup", 30, |s| s["state"] == "completed");
    assert_eq!(setup["runs"][0]["exit_code"], 0);
    // web waits for setup, then both replicas pass the HTTP check (2s interval).
    wait_state(&d, "web", 40, |s| {
        s["healthy"] == 2 && s["state"] == "running"
    });
    let web = running(&d, "demo-web-0-");
    let page = d.ok(&["exec", &web[0].0, "wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(!page.is_empty());
    let tick = service(&d, "tick");
    assert_eq!(tick["state"], "scheduled", "{tick:#}");
    assert!(tick["next_run"].as_str().is_some());
}

#[test]
fn daemon_sigkilled_mid_rollout_converges_without_duplicates() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    // The new version takes a while to become healthy, so the kill lands mid-rollout.
    let version = |v: &str| {
        spec(
            &image,
            &format!(
                "  app:\n    image: IMAGE\n    network: none\n    env: {{VERSION: \"{v}\"}}\n    command: [sh, -c, \"sleep 1; touch /tmp/ok; trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n    replicas: 2\n    health: {{check: {{type: command, command: [test, -f, /tmp/ok]}}, interval: 300ms, timeout: 2s, retries: 2, start_grace: 5s}}\n"
            ),
        )
    };
    deploy(&d, "r1.yaml", &version("1"));
    wait_state(&d, "app", 30, |s| {
        s["healthy"] == 2 && s["state"] == "running"
    });
    let v1 = running(&d, "t-app-");
    deploy(&d, "r2.yaml", &version("2"));
    // Wait until a new replica runs next to the old ones, then kill the daemon.
    assert!(eventually(20, || running(&d, "t-app-").len() == 3));
    d.kill9();
    d.spawn();
    let mut now = Vec::new();
    let done = eventually(60, || {
        now = running(&d, "t-app-");
        now.len() == 2
            && now
                .iter()
                .all(|n| n.2.contains("(healthy)") && !v1.iter().any(|o| o.1 == n.1))
    });
    assert!(
        done,
        "rollout did not finish after the restart: {v1:?} {now:?}\n{}",
        d.log()
    );
    for slot in 0..2 {
        assert_eq!(running(&d, &format!("t-app-{slot}-")).len(), 1, "{now:?}");
    }
    wait_state(&d, "app", 20, |s| s["state"] == "running");
}

#[test]
fn daemon_restart_keeps_backoff_restart_count_and_health() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    // `crash` exits at once: restarts after 1s, 2s, 4s, then 8s. `ok` checks every 4s.
    let yaml = spec(
        &image,
        &format!(
            "  crash:\n    image: IMAGE\n    network: none\n    command: [sh, -c, \"exit 1\"]\n    restart: {{policy: always, backoff: {{initial: 1s, max: 60s}}}}\n  ok:\n    image: IMAGE\n    network: none\n    command: {IDLE}\n    health: {{check: {{type: command, command: [\"true\"]}}, interval: 4s, timeout: 2s, retries: 1, start_grace: 0s}}\n"
        ),
    );
    deploy(&d, "b.yaml", &yaml);
    wait_state(&d, "ok", 30, |s| s["healthy"] == 1);
    // The 4th exit: the next start is due 8s later.
    let restarts =
        wait_state(&d, "crash", 40, |s| s["restarts"].as_u64() >= Some(4))["restarts"].clone();
    d.kill9();
    let killed_at = Instant::now();
    d.spawn();
    // Health comes back with the daemon (the next check is seconds away).
    let ok = service(&d, "ok");
    assert_eq!(ok["healthy"], 1, "{ok:#}");
    let ps = running(&d, "t-ok-0-");
    assert!(ps[0].2.contains("(healthy)"), "{ps:?}");
    // The exit seen before the crash is not counted again, and the backoff goes on: no
    // restart at the initial 1s delay, and the service still shows its crash loop.
    let s = wait_state(&d, "crash", 5, |s| s["state"] == "crash-loop");
    assert_eq!(s["restarts"], restarts, "{s:#}");
    while killed_at.elapsed() < Duration::from_secs(4) {
        let s = service(&d, "crash");
        assert_eq!(s["restarts"], restarts, "restarted at full speed: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // And it keeps restarting once the backoff is over.
    let next = restarts.as_u64().unwrap() + 1;
    wait_state(&d, "crash", 30, |s| s["restarts"].as_u64() >= Some(next));
}

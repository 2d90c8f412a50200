//! `pause` and `unpause` with real containers: the cgroup freezer stops every process, the
//! state shows in `ps` and `inspect`, the other verbs treat a paused container as docker
//! does, and a paused container is still paused after a daemon restart.

mod common;

use common::{daemon_with_busybox, eventually, run, TestDaemon};

/// A container printing a growing counter five times a second.
const TICKER: &str = "trap 'exit 3' TERM; i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done";

fn log_lines(d: &TestDaemon, name: &str) -> usize {
    d.ok(&["logs", name]).lines().count()
}

fn state(d: &TestDaemon, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    v[0]["state"].as_str().unwrap_or_default().to_string()
}

fn ps_line(d: &TestDaemon, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in ps: {v}"))
}

/// Output stops while paused and grows again once unpaused.
fn assert_frozen_then_thawed(d: &TestDaemon, name: &str) {
    let before = log_lines(d, name);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(log_lines(d, name), before, "output grew while paused");
    d.ok(&["unpause", name]);
    assert!(
        eventually(20, || log_lines(d, name) > before + 2),
        "output did not resume after unpause\n{}",
        d.log()
    );
    assert_eq!(state(d, name), "running");
}

#[test]
fn pause_freezes_the_processes_and_unpause_resumes_them() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&["run", "-d", "--name", "ticker", &image, "sh", "-c", TICKER]);
    assert!(
        eventually(20, || log_lines(&d, "ticker") > 2),
        "{}",
        d.log()
    );
    assert_eq!(d.ok(&["pause", "ticker"]).trim(), "ticker");
    assert_eq!(state(&d, "ticker"), "paused");
    let line = ps_line(&d, "ticker");
    assert_eq!(line["state"], "paused", "{line}");
    let status = line["status"].as_str().unwrap();
    assert!(
        status.starts_with("Up ") && status.ends_with(" (Paused)"),
        "{status}"
    );
    // The table shows it too, and `ps` without -a lists it (it is running).
    let table = d.ok(&["ps"]);
    assert!(table.contains("(Paused)"), "{table}");

    // Docker refuses these on a paused container; the refusal names the state.
    let (code, _, err) = run(&d, &["pause", "ticker"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already paused"), "{err}");
    let (code, _, err) = run(&d, &["exec", "ticker", "true"]);
    assert_ne!(code, 0, "exec ran in a paused container");
    assert!(err.contains("paused"), "{err}");
    let (code, _, err) = run(&d, &["rm", "ticker"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("paused"), "{err}");
    assert_eq!(state(&d, "ticker"), "paused");

    assert_frozen_then_thawed(&d, "ticker");
    let (code, _, err) = run(&d, &["unpause", "ticker"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not paused"), "{err}");
    // exec works again.
    assert_eq!(d.ok(&["exec", "ticker", "echo", "back"]).trim(), "back");
}

#[test]
fn stop_kill_and_rm_force_thaw_a_paused_container_first() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    // stop: the TERM trap runs (so the container was thawed before the signal), exit 3.
    d.ok(&["run", "-d", "--name", "s", &image, "sh", "-c", TICKER]);
    assert!(eventually(20, || log_lines(&d, "s") > 1), "{}", d.log());
    d.ok(&["pause", "s"]);
    d.ok(&["stop", "-t", "20", "s"]);
    assert_eq!(d.ok(&["wait", "s"]).trim(), "3");
    assert_eq!(state(&d, "s"), "exited");

    // kill -s TERM: delivered and handled.
    d.ok(&["run", "-d", "--name", "k", &image, "sh", "-c", TICKER]);
    assert!(eventually(20, || log_lines(&d, "k") > 1), "{}", d.log());
    d.ok(&["pause", "k"]);
    d.ok(&["kill", "-s", "TERM", "k"]);
    assert_eq!(d.ok(&["wait", "k"]).trim(), "3");

    // rm -f: gone, nothing left of it.
    d.ok(&["run", "-d", "--name", "forced", &image, "sleep", "300"]);
    d.ok(&["pause", "forced"]);
    d.ok(&["rm", "-f", "forced"]);
    let (code, _, err) = run(&d, &["inspect", "forced"]);
    assert_ne!(code, 0, "{err}");

    // Neither verb applies to a container that is not running, or to no container.
    let (code, _, err) = run(&d, &["pause", "s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not running"), "{err}");
    let (code, _, err) = run(&d, &["unpause", "s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not running"), "{err}");
    let (code, _, err) = run(&d, &["pause", "no-such-container"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-container"), "{err}");
}

#[test]
fn a_paused_container_is_still_paused_after_a_daemon_restart() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&["run", "-d", "--name", "p", &image, "sh", "-c", TICKER]);
    assert!(eventually(20, || log_lines(&d, "p") > 1), "{}", d.log());
    d.ok(&["pause", "p"]);
    d.stop();
    d.spawn();
    assert!(
        eventually(30, || state(&d, "p") == "paused"),
        "state after restart: {}\n{}",
        state(&d, "p"),
        d.log()
    );
    assert!(ps_line(&d, "p")["status"]
        .as_str()
        .unwrap()
        .ends_with("(Paused)"));
    assert_frozen_then_thawed(&d, "p");
}

#[test]
fn a_paused_service_replica_is_not_probed_nor_replaced() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let yaml = format!(
        "version: v1\ndeployment: t\nservices:\n  app:\n    image: {image}\n    network: none\n    command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n    health: {{check: {{type: command, command: [\"true\"]}}, interval: 300ms, timeout: 1s, retries: 1, start_grace: 0s}}\n    restart: {{policy: always, backoff: {{initial: 1s, max: 5s}}}}\n"
    );
    let path = d.dir.path().join("svc.yaml");
    std::fs::write(&path, yaml).unwrap();
    d.ok(&["deploy", &path.display().to_string()]);
    let healthy = || {
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["services", "--format", "json"])).unwrap();
        v[0].clone()
    };
    assert!(
        eventually(30, || healthy()["healthy"] == 1),
        "{}\n{}",
        healthy(),
        d.log()
    );
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--format", "json"])).unwrap();
    let (name, id) = (
        v[0]["name"].as_str().unwrap().to_string(),
        v[0]["id"].as_str().unwrap().to_string(),
    );
    d.ok(&["pause", &name]);
    // Ten probe intervals frozen: no failed probe, no replacement.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let s = healthy();
    assert_eq!(s["healthy"], 1, "{s}\n{}", d.log());
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(ps_line(&d, &name)["id"], id.as_str());
    assert_eq!(state(&d, &name), "paused");
    d.ok(&["unpause", &name]);
    d.ok(&["undeploy", "t"]);
}

#[test]
fn pause_unpause_and_rename_are_announced_as_events() {
    use std::io::BufRead;
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let id = d.ok(&["run", "-d", "--name", "ev", &image, "sleep", "300"]);
    let id = id.trim().to_string();
    let mut events = std::process::Command::new(env!("CARGO_BIN_EXE_zlayer-agent"))
        .arg("--socket")
        .arg(d.socket())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The subscription is live once an event arrives: pause (and undo it) until the pause is
    // seen, then unpause and rename; the last three events must be exactly those.
    let mut seen: Vec<serde_json::Value> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut pause_seen = false;
    while std::time::Instant::now() < deadline && !pause_seen {
        d.ok(&["pause", "ev"]);
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id.as_str() {
                pause_seen |= v["action"] == "pause";
                seen.push(v);
            }
        }
        if !pause_seen {
            d.ok(&["unpause", "ev"]);
        }
    }
    assert!(pause_seen, "no pause event: {seen:?}");
    d.ok(&["unpause", "ev"]);
    d.ok(&["rename", "ev", "ev2"]);
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["id"] == id.as_str() {
            let done = v["action"] == "rename";
            seen.push(v);
            if done {
                break;
            }
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    let tail = &seen[seen.len().saturating_sub(3)..];
    let actions: Vec<&str> = tail.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["pause", "unpause", "rename"], "{seen:?}");
    assert!(tail.iter().all(|e| e["kind"] == "container"), "{seen:?}");
    assert_eq!(tail[2]["name"], "ev2");
    assert_eq!(tail[2]["attributes"]["oldName"], "ev");
}

//! Services end to end: a real daemon, real containers from the busybox fixture. Each daemon
//! runs in a network namespace of its own (bridges, iptables rules and published ports stay
//! there); most services use `network: none`, which is cheaper to set up.

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
    // Only services publish ports; the error points at the `publish`.
    std::fs::write(
        &path,
        spec(
            &image,
            "  app:\n    kind: job\n    image: IMAGE\n    endpoints: [{port: 80, publish: 8080}]\n",
        ),
    )
    .unwrap();
    let (code, _, err) = run(&d, &["deploy", &path.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.yaml:7:37") && err.contains("only services"),
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
    if !require_net_tools() {
        return;
    }
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
    let w = service(&d, "web");
    assert_eq!(w["ports"][0], "0.0.0.0:8080->8080/tcp", "{w:#}");
    // The published port, from the daemon's namespace (its host side).
    let mut got = String::new();
    assert!(
        eventually(10, || {
            got = host_get(&d, 8080);
            got.contains(" 200 OK") && got.contains("hello from zlayer")
        }),
        "published port 8080: {got:?}\n{}",
        d.log()
    );
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

/// The bridge tests need the CNI plugins and iptables (the daemon runs in its own namespace).
fn require_net_tools() -> bool {
    common::require_tools(&["/usr/lib/cni/bridge", "/usr/sbin/iptables"])
}

/// A container's id prefix (its hostname) and bridge address.
fn id_and_ip(d: &TestDaemon, name: &str) -> (String, String) {
    let v: Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    let id = v[0]["id"].as_str().unwrap()[..12].to_string();
    let ip = v[0]["network"]["ips"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no IP: {v}"))
        .split('/')
        .next()
        .unwrap()
        .to_string();
    (id, ip)
}

/// The addresses a name resolves to, asked from inside container `from` with busybox's own
/// resolver (the static busybox's `getaddrinfo` needs NSS libraries the image lacks).
fn resolve(d: &TestDaemon, from: &str, name: &str) -> Vec<String> {
    let out = d.cli(&[
        "exec",
        from,
        "sh",
        "-c",
        &format!("nslookup -type=a {name} 2>/dev/null | awk '/^Address: /{{print $2}}'"),
    ]);
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        // (The server's own `Address: 10.213.0.1:53` line does not parse.)
        .filter(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// `GET /` on 127.0.0.1:`port` from the daemon's namespace (its "host side").
fn host_get(d: &TestDaemon, port: u16) -> String {
    use std::io::{Read, Write};
    d.ns().run_in(move || {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let mut out = String::new();
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            let _ = s.read_to_string(&mut out);
        }
        out
    })
}

#[test]
fn bridge_services_find_each_other_by_name_only_healthy_replicas_and_publish() {
    if !require_net_tools() {
        return;
    }
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    // A db replica is healthy once /ctl/ok-<its hostname> exists (the test decides which);
    // start_grace keeps the others "starting" (never replaced). `flaky` turns unhealthy when
    // /ctl/flaky-ok goes away.
    let ctl = d.dir.path().join("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    std::fs::write(ctl.join("flaky-ok"), "").unwrap();
    let web = "[sh, -c, \"mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www\"]";
    let yaml = spec(
        &image,
        &format!(
            "  db:\n    image: IMAGE\n    command: {web}\n    replicas: 2\n    endpoints: [{{name: http, port: 80, publish: 8088}}]\n    storage: [{{type: bind, source: {ctl}, target: /ctl, readonly: true}}]\n    health: {{check: {{type: command, command: [sh, -c, \"test -e /ctl/ok-$(hostname)\"]}}, interval: 300ms, timeout: 2s, retries: 1, start_grace: 1h}}\n    restart: {{policy: always, backoff: {{initial: 3s, max: 3s}}}}\n  flaky:\n    image: IMAGE\n    command: {IDLE}\n    storage: [{{type: bind, source: {ctl}, target: /ctl, readonly: true}}]\n    health: {{check: {{type: command, command: [test, -e, /ctl/flaky-ok]}}, interval: 300ms, timeout: 2s, retries: 1, start_grace: 0s}}\n    restart: {{policy: always, backoff: {{initial: 30s, max: 30s}}}}\n  client:\n    image: IMAGE\n    command: {IDLE}\n",
            ctl = ctl.display()
        ),
    );
    deploy(&d, "b.yaml", &yaml);
    wait_state(&d, "db", 60, |s| s["running"] == 2);
    wait_state(&d, "client", 30, |s| s["running"] == 1);
    wait_state(&d, "flaky", 30, |s| s["healthy"] == 1);
    let client = running(&d, "t-client-0-")[0].0.clone();
    let a = running(&d, "t-db-0-")[0].0.clone();
    let b = running(&d, "t-db-1-")[0].0.clone();
    let (a_id, a_ip) = id_and_ip(&d, &a);
    let (b_id, b_ip) = id_and_ip(&d, &b);
    assert!(
        a_ip.starts_with("10.213.") && b_ip.starts_with("10.213."),
        "{a_ip} {b_ip}"
    );
    // Nothing healthy yet: the name answers nothing, the published port serves nothing.
    assert!(resolve(&d, &client, "db").is_empty());
    assert_eq!(host_get(&d, 8088), "");

    // Replica A turns healthy: only it is answered, by `db` and `db.t`, and serves the port.
    std::fs::write(ctl.join(format!("ok-{a_id}")), "").unwrap();
    let mut got = Vec::new();
    assert!(
        eventually(20, || {
            got = resolve(&d, &client, "db");
            got == [a_ip.clone()]
        }),
        "db -> {got:?}, want [{a_ip}]\n{}",
        d.log()
    );
    assert_eq!(resolve(&d, &client, "db.t"), vec![a_ip.clone()]);
    let page = d.ok(&[
        "exec",
        &client,
        "sh",
        "-c",
        "ip=$(nslookup -type=a db 2>/dev/null | awk '/^Address: /{print $2}' | tail -n 1); printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $ip 80",
    ]);
    assert!(page.contains(&a_id), "reached db by name: {page}");
    assert!(host_get(&d, 8088).contains(&a_id));

    // B too: both answered (round-robin), and the published port balances over both.
    std::fs::write(ctl.join(format!("ok-{b_id}")), "").unwrap();
    let mut both = vec![a_ip.clone(), b_ip.clone()];
    both.sort();
    assert!(eventually(20, || resolve(&d, &client, "db") == both));
    let mut served = std::collections::HashSet::new();
    for _ in 0..6 {
        let body = host_get(&d, 8088);
        served.extend(
            [&a_id, &b_id]
                .into_iter()
                .filter(|id| body.contains(id.as_str()))
                .cloned(),
        );
    }
    assert_eq!(
        served.len(),
        2,
        "the published port balances over both replicas"
    );

    // A replica that stops leaves DNS (its restart waits 3s), and its restart is a new,
    // not yet healthy container that is not answered either.
    d.ok(&["kill", &a]);
    assert!(
        eventually(10, || resolve(&d, &client, "db") == [b_ip.clone()]),
        "{}",
        d.log()
    );
    for _ in 0..3 {
        assert!(host_get(&d, 8088).contains(&b_id));
    }

    // An unhealthy replica is dropped from DNS (and replaced after its 30s backoff).
    let flaky = running(&d, "t-flaky-0-")[0].0.clone();
    let (_, flaky_ip) = id_and_ip(&d, &flaky);
    assert_eq!(resolve(&d, &client, "flaky"), vec![flaky_ip.clone()]);
    std::fs::remove_file(ctl.join("flaky-ok")).unwrap();
    assert!(
        eventually(10, || resolve(&d, &client, "flaky").is_empty()),
        "{}",
        d.log()
    );

    // Ports are checked at deploy: another deployment cannot take 8088, nor can `run -p`.
    let other = "version: v1\ndeployment: u\nservices:\n  x:\n    image: IMAGE\n    command: [sleep, \"1000\"]\n    endpoints: [{port: 80, publish: 8088}]\n".replace("IMAGE", &image);
    let path = d.dir.path().join("u.yaml");
    std::fs::write(&path, other).unwrap();
    let (code, _, err) = run(&d, &["deploy", &path.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("u.yaml:7:") && err.contains("already published by service t/db"),
        "{err}"
    );
    let (code, _, err) = run(&d, &["run", "--rm", "-p", "8088:80", &image, "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("published by service t/db"), "{err}");

    // After a daemon SIGKILL the names and the port come back from the adopted replicas.
    let b_now = running(&d, "t-db-1-")[0].1.clone();
    d.kill9();
    d.spawn();
    assert!(
        eventually(20, || resolve(&d, &client, "db").contains(&b_ip)),
        "{}",
        d.log()
    );
    assert!(eventually(10, || host_get(&d, 8088).contains(&b_id)));
    assert_eq!(running(&d, "t-db-1-")[0].1, b_now, "adopted, not restarted");

    // Undeploy: names and port are gone.
    d.ok(&["undeploy", "t"]);
    assert_eq!(host_get(&d, 8088), "");
}

#[test]
fn rolling_update_and_scale_keep_names_and_the_published_port_serving() {
    if !require_net_tools() {
        return;
    }
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let version = |v: &str| {
        spec(&image, &format!(
            "  app:\n    image: IMAGE\n    env: {{VERSION: \"{v}\"}}\n    command: [sh, -c, \"mkdir -p /tmp/www && echo v$VERSION > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www\"]\n    replicas: 2\n    endpoints: [{{port: 80, publish: 8090}}]\n    health: {{check: {{type: http, port: 80, path: /index.html}}, interval: 300ms, timeout: 1s, retries: 2, start_grace: 0s}}\n  client:\n    image: IMAGE\n    command: {IDLE}\n"
        ))
    };
    deploy(&d, "v1.yaml", &version("1"));
    wait_state(&d, "app", 60, |s| s["healthy"] == 2);
    wait_state(&d, "client", 30, |s| s["running"] == 1);
    let client = running(&d, "t-client-0-")[0].0.clone();
    let ips = |d: &TestDaemon| {
        let mut v: Vec<String> = running(d, "t-app-")
            .iter()
            .map(|r| id_and_ip(d, &r.0).1)
            .collect();
        v.sort();
        v
    };
    let v1 = ips(&d);
    assert!(eventually(10, || resolve(&d, &client, "app") == v1));

    // Rolling update: the published port answers every request meanwhile.
    deploy(&d, "v2.yaml", &version("2"));
    let mut failures = 0;
    let mut requests = 0;
    let done = eventually(60, || {
        let body = host_get(&d, 8090);
        requests += 1;
        if !body.contains(" 200 OK") {
            failures += 1;
        }
        let s = service(&d, "app");
        s["state"] == "running"
            && s["healthy"] == 2
            && running(&d, "t-app-").len() == 2
            && host_get(&d, 8090).contains("v2")
    });
    assert!(done, "rollout did not finish\n{}", d.log());
    assert_eq!(
        failures, 0,
        "{failures} of {requests} requests failed during the rollout"
    );
    let v2 = ips(&d);
    assert!(
        eventually(10, || resolve(&d, &client, "app") == v2),
        "DNS follows the new replicas: {v2:?}"
    );
    for _ in 0..4 {
        assert!(host_get(&d, 8090).contains("v2"));
    }

    // Scale up and down: the name follows.
    d.ok(&["scale", "t/app", "3"]);
    wait_state(&d, "app", 60, |s| s["healthy"] == 3);
    assert!(eventually(10, || resolve(&d, &client, "app").len() == 3));
    d.ok(&["scale", "t/app", "1"]);
    assert!(eventually(30, || running(&d, "t-app-").len() == 1));
    let one = ips(&d);
    assert!(eventually(10, || resolve(&d, &client, "app.t") == one));
}

#[test]
fn named_network_service_with_a_published_udp_port() {
    if !require_net_tools() {
        return;
    }
    // busybox has no UDP server; the host's python3 (bind-mounted read-only) plays one.
    if !std::path::Path::new("/usr/bin/python3").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/usr/bin/python3 missing (CI=true)"
        );
        eprintln!("skipping: /usr/bin/python3 is missing");
        return;
    }
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let server = r#""import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',53))\nwhile True:\n d,a=s.recvfrom(512)\n s.sendto(b'pong:'+d,a)\n""#;
    let libs = "[{type: bind, source: /usr, target: /usr, readonly: true}, {type: bind, source: /usr/lib, target: /lib, readonly: true}, {type: bind, source: /usr/lib64, target: /lib64, readonly: true}]";
    let yaml = spec(
        &image,
        &format!(
            "  echo:\n    image: IMAGE\n    network: front\n    command: [/usr/bin/python3, -c, {server}]\n    storage: {libs}\n    endpoints: [{{port: 53, protocol: udp, publish: 5353}}]\n  peer:\n    image: IMAGE\n    network: front\n    command: {IDLE}\n  client:\n    image: IMAGE\n    command: {IDLE}\n"
        ),
    );
    deploy(&d, "n.yaml", &yaml);
    for s in ["echo", "peer", "client"] {
        wait_state(&d, s, 60, |v| v["running"] == 1);
    }
    // The network was created on first use, with its own subnet.
    let nets = d.ok(&["network", "ls", "--format", "json"]);
    assert!(nets.contains("\"front\""), "{nets}");
    let echo = running(&d, "t-echo-0-")[0].0.clone();
    let (_, echo_ip) = id_and_ip(&d, &echo);
    assert!(
        !echo_ip.starts_with("10.213."),
        "front is not zlayer0: {echo_ip}"
    );
    assert_eq!(service(&d, "echo")["ports"][0], "0.0.0.0:5353->53/udp");
    // The name is answered on the service's network only.
    let peer = running(&d, "t-peer-0-")[0].0.clone();
    let client = running(&d, "t-client-0-")[0].0.clone();
    assert!(eventually(10, || resolve(&d, &peer, "echo") == [echo_ip.clone()]));
    assert!(resolve(&d, &client, "echo").is_empty());
    // The published UDP port answers from the host side.
    let mut answer = String::new();
    let ok = eventually(15, || {
        answer = d.ns().run_in(|| {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s.send_to(b"ping", "127.0.0.1:5353").unwrap();
            let mut buf = [0u8; 64];
            match s.recv_from(&mut buf) {
                Ok((n, _)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(e) => e.to_string(),
            }
        });
        answer == "pong:ping"
    });
    assert!(ok, "UDP answer: {answer}\n{}", d.log());
    d.ok(&["undeploy", "t"]);
}

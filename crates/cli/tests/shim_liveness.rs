//! A shim that dies or stops answering, and a daemon that restarts (issues 17.2, 17.3, 18.5,
//! 11.7, 11.8): the daemon notices a killed shim at once, kills what its container ran and
//! records the truth; a stopped shim hangs no call; nothing of a container (process, cgroup
//! directory in any hierarchy, mount) outlives its removal; recovery does not hold up the API.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{daemon_with_busybox, eventually, run_within, TestDaemon, BIN};
use serde_json::Value;

/// A command that ends promptly on SIGTERM (a bare `sleep` as PID 1 ignores it).
const IDLE: &str = "trap 'exit 3' TERM; while true; do sleep 0.1; done";

fn inspect(d: &TestDaemon, name: &str) -> Value {
    let v: Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    match v {
        Value::Array(mut a) => a.remove(0),
        v => v,
    }
}

fn ps_entry(d: &TestDaemon, name: &str) -> Option<Value> {
    let ps: Vec<Value> = serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).unwrap();
    ps.into_iter().find(|c| c["name"] == name)
}

/// The pid of the shim of container `id`: the live process with its command line that leads
/// a session of its own (the shim calls setsid; its short-lived start helpers do not).
fn shim_pid(id: &str) -> i32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let leads_session = std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            f.len() > 3 && f[0] != "Z" && f[3] == pid.to_string()
        });
        if leads_session
            && args.iter().any(|a| *a == b"shim")
            && args
                .windows(2)
                .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
        {
            return pid;
        }
    }
    panic!("no shim process for {id}");
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Every directory of the container's cgroup that exists, in any hierarchy under
/// /sys/fs/cgroup (v1 controllers, named hierarchies, the v2 tree).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let rel = format!("zlayer-agent/{id}");
    let root = PathBuf::from("/sys/fs/cgroup");
    if root.join(&rel).exists() {
        found.push(root.join(&rel));
    }
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let d = e.path().join(&rel);
        if d.exists() {
            found.push(d);
        }
    }
    found
}

fn run_detached(
    d: &TestDaemon,
    image: &str,
    name: &str,
    extra: &[&str],
    cmd: &str,
) -> (String, i32) {
    let mut args = vec!["run", "-d", "--network", "none", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[image, "sh", "-c", cmd]);
    let id = d.ok(&args).trim().to_string();
    let pid = inspect(d, name)["pid"].as_i64().unwrap() as i32;
    (id, pid)
}

#[test]
fn a_killed_shim_is_noticed_at_once_and_nothing_of_its_container_survives() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let (id, init) = run_detached(&d, &image, "orphan", &[], IDLE);
    assert!(alive(init));
    assert!(!cgroup_dirs(&id).is_empty(), "the container has a cgroup");
    let killed_at = Instant::now();
    signal(shim_pid(&id), nix::sys::signal::Signal::SIGKILL);
    let mut last = None;
    assert!(
        eventually(20, || {
            last = ps_entry(&d, "orphan");
            last.as_ref().is_some_and(|c| c["state"] == "exited")
        }),
        "still shown running after its shim was killed: {last:?}\n{}",
        d.log()
    );
    let noticed = killed_at.elapsed();
    let c = last.unwrap();
    assert_eq!(c["exit_code"], 137, "{c}");
    assert!(
        c["status"].as_str().unwrap().starts_with("Exited (137)"),
        "{c}"
    );
    let i = inspect(&d, "orphan");
    assert!(
        i["error"].as_str().unwrap_or("").contains("shim lost"),
        "inspect tells why: {i}"
    );
    // Killed with its shim, not left running as an orphan; the cgroup is gone everywhere.
    assert!(
        eventually(10, || !alive(init)),
        "the container's init survived"
    );
    assert!(
        eventually(10, || cgroup_dirs(&id).is_empty()),
        "{:?}",
        cgroup_dirs(&id)
    );
    let (code, _, err, _) = run_within(&d, &["rm", "-f", "orphan"], Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));
    assert!(ps_entry(&d, "orphan").is_none());
    eprintln!("shim death noticed and recorded within {noticed:?}");
}

#[test]
fn a_stopped_shim_hangs_no_call_and_rm_f_kills_through_the_cgroup() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let (id1, init1) = run_detached(&d, &image, "frozen", &[], IDLE);
    let (id2, init2) = run_detached(&d, &image, "doomed", &[], "sleep 1000");
    let shim1 = shim_pid(&id1);
    let shim2 = shim_pid(&id2);
    signal(shim1, nix::sys::signal::Signal::SIGSTOP);
    signal(shim2, nix::sys::signal::Signal::SIGSTOP);
    let limit = Duration::from_secs(60);

    let (code, _, err, took) = run_within(&d, &["exec", "frozen", "true"], limit);
    assert_ne!(code, 0);
    assert!(err.contains("did not answer"), "exec: {err}");
    eprintln!("exec failed after {took:?}");
    let (code, _, err, took) = run_within(&d, &["wait", "frozen"], limit);
    assert_ne!(code, 0);
    assert!(err.contains("did not answer"), "wait: {err}");
    eprintln!("wait failed after {took:?}");

    // kill reaches the container's init through its cgroup.
    let (code, _, err, _) = run_within(&d, &["kill", "-s", "TERM", "frozen"], limit);
    assert_eq!(code, 0, "kill: {err}");
    assert!(
        eventually(10, || !alive(init1)),
        "SIGTERM did not reach the init"
    );
    assert!(d.log().contains("signalling") || d.log().contains("through the container's cgroup"));
    let (code, _, err, _) = run_within(&d, &["stop", "-t", "1", "frozen"], limit);
    assert_eq!(code, 0, "stop: {err}");
    assert_eq!(ps_entry(&d, "frozen").unwrap()["state"], "exited");

    // rm -f: SIGKILL through the cgroup, the cgroup gone in every hierarchy.
    let (code, _, err, _) = run_within(&d, &["rm", "-f", "doomed"], limit);
    assert_eq!(code, 0, "rm -f: {err}\n{}", d.log());
    assert!(
        !alive(init2),
        "rm -f succeeded while the container's init lives"
    );
    assert!(cgroup_dirs(&id2).is_empty(), "{:?}", cgroup_dirs(&id2));
    assert!(ps_entry(&d, "doomed").is_none());
    assert!(
        eventually(10, || !alive(shim2)),
        "the stopped shim of a removed container lingers"
    );

    // The first shim, continued, finds its container gone and ends normally.
    signal(shim1, nix::sys::signal::Signal::SIGCONT);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim2),
        nix::sys::signal::Signal::SIGCONT,
    );
    assert!(
        eventually(20, || !alive(shim1)),
        "the continued shim did not finish"
    );
    let (code, _, err, _) = run_within(&d, &["rm", "frozen"], limit);
    assert_eq!(code, 0, "rm: {err}");
    assert!(cgroup_dirs(&id1).is_empty(), "{:?}", cgroup_dirs(&id1));
}

#[test]
fn a_service_replica_whose_shim_is_killed_is_replaced() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let yaml = format!(
        "version: v1\ndeployment: t\nservices:\n  app:\n    image: {image}\n    network: none\n    command: [sh, -c, \"{IDLE}\"]\n    replicas: 1\n    restart: {{policy: always, backoff: {{initial: 1s, max: 2s}}}}\n"
    );
    let path = d.dir.path().join("s.yaml");
    std::fs::write(&path, yaml).unwrap();
    d.ok(&["deploy", &path.display().to_string()]);
    let running = |d: &TestDaemon| -> Vec<String> {
        let ps: Vec<Value> = serde_json::from_str(&d.ok(&["ps", "--format", "json"])).unwrap();
        ps.into_iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with("t-app-0-"))
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut first = Vec::new();
    assert!(eventually(30, || {
        first = running(&d);
        first.len() == 1
    }));
    let init = inspect(&d, &first[0])["pid"].as_i64().unwrap() as i32;
    signal(shim_pid(&first[0]), nix::sys::signal::Signal::SIGKILL);
    let mut now = Vec::new();
    assert!(
        eventually(30, || {
            now = running(&d);
            now.len() == 1 && now[0] != first[0]
        }),
        "replica not replaced: {now:?}\n{}",
        d.log()
    );
    assert!(!alive(init), "the old replica's process survived");
    assert!(eventually(10, || cgroup_dirs(&first[0]).is_empty()));
    d.ok(&["undeploy", "t"]);
}

#[test]
fn recovery_runs_in_the_background_and_the_api_answers_at_once() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    let mut lost = Vec::new();
    for i in 0..4 {
        let name = format!("lost{i}");
        let (id, init) = run_detached(&d, &image, &name, &[], IDLE);
        lost.push((name, id, init));
    }
    let (_, alive_init) = run_detached(&d, &image, "kept", &[], IDLE);
    d.kill9();
    for (_, id, _) in &lost {
        signal(shim_pid(id), nix::sys::signal::Signal::SIGKILL);
    }
    // Before: ~3 s per lost container, one after the other, before the API listened.
    let started = Instant::now();
    d.spawn();
    let listening = started.elapsed();
    let (code, ps, err, took) = run_within(&d, &["ps", "-a"], Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(
        listening + took < Duration::from_secs(4),
        "the API answered {listening:?} + {took:?} after start:\n{ps}"
    );
    for (name, _, _) in &lost {
        let line = ps.lines().find(|l| l.contains(name.as_str())).unwrap_or("");
        assert!(
            line.contains("(recovering)") || line.contains("Exited (137)"),
            "{name} is shown neither as recovering nor as lost: {line:?}"
        );
    }
    for (name, id, init) in &lost {
        let mut last = None;
        assert!(
            eventually(30, || {
                last = ps_entry(&d, name);
                last.as_ref().is_some_and(|c| c["exit_code"] == 137)
            }),
            "{name}: {last:?}\n{}",
            d.log()
        );
        assert!(
            inspect(&d, name)["error"]
                .as_str()
                .unwrap_or("")
                .contains("shim lost"),
            "{name}"
        );
        assert!(
            eventually(10, || !alive(*init)),
            "{name}'s init survived recovery"
        );
        assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
    }
    assert!(alive(alive_init));
    assert_eq!(ps_entry(&d, "kept").unwrap()["state"], "running");
    let (code, out, _, _) =
        run_within(&d, &["exec", "kept", "echo", "ok"], Duration::from_secs(30));
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}

/// Mount points under `dir` in the daemon's mount namespace.
fn mounts_under(d: &TestDaemon, dir: &std::path::Path) -> Vec<String> {
    let pid = d.child.as_ref().unwrap().id();
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir.display().to_string()))
        .map(str::to_string)
        .collect()
}

#[test]
fn rm_containers_are_removed_after_a_daemon_sigkill() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    // Ends while the daemon is down.
    run_detached(&d, &image, "early", &["--rm"], "sleep 1");
    // Ends after the restart.
    run_detached(&d, &image, "late", &["--rm"], "sleep 5");
    // Loses its shim with the daemon.
    let (lost_id, lost_init) = run_detached(&d, &image, "shimless", &["--rm"], IDLE);
    // Attached: its client goes with the daemon; nobody will come for its exit code.
    let mut attached = Command::new(BIN)
        .arg("--socket")
        .arg(d.socket())
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--name",
            "attached",
            &image,
            "sleep",
            "4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(20, || ps_entry(&d, "attached").is_some()));
    d.kill9();
    signal(shim_pid(&lost_id), nix::sys::signal::Signal::SIGKILL);
    let _ = attached.wait();
    std::thread::sleep(Duration::from_millis(1500));
    d.spawn();
    let containers = d.root().join("containers");
    let mut ps = String::new();
    assert!(
        eventually(30, || {
            ps = d.ok(&["ps", "-a", "--format", "json"]);
            ps.trim() == "[]"
        }),
        "--rm containers left after the restart: {ps}\n{}",
        d.log()
    );
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0);
    assert!(!alive(lost_init));
    assert!(
        cgroup_dirs(&lost_id).is_empty(),
        "{:?}",
        cgroup_dirs(&lost_id)
    );
    let root = d.root();
    assert!(
        eventually(10, || mounts_under(&d, &root.join("containers")).is_empty()
            && mounts_under(&d, &root.join("trash")).is_empty()),
        "{:?}",
        mounts_under(&d, &root)
    );
}

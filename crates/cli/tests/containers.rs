//! Containers through the daemon and the CLI, with real containers (issue 3's "test every line").

mod common;

use common::{daemon_with_busybox, eventually, run};

#[test]
fn run_rm_prints_output_and_exits_with_the_containers_status() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 7",
        ],
    );
    assert_eq!(code, 7, "stdout: {out}\nstderr: {err}\n{}", d.log());
    assert_eq!(out, "hi\n");
    assert!(err.contains("oops"), "{err}");
    // --rm: nothing left.
    let (_, ps, _) = run(&d, &["ps", "-a", "--format", "json"]);
    assert_eq!(ps.trim(), "[]", "{ps}");
    assert_eq!(
        std::fs::read_dir(d.root().join("containers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn signals_missing_executables_and_oom_give_dockers_statuses() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    // Killed by signal n -> 128 + n. (A PID 1 only gets signals it handles, except SIGKILL
    // from outside its namespace, so the signal comes from `kill`.)
    d.ok(&["run", "-d", "--name", "victim", &image, "sleep", "100"]);
    d.ok(&["kill", "-s", "KILL", "victim"]);
    assert_eq!(d.ok(&["wait", "victim"]).trim(), "137");
    d.ok(&["rm", "victim"]);
    // A missing executable -> 127 and a clear message.
    let (code, _, err) = run(&d, &["run", "--rm", &image, "/no/such/binary"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("/no/such/binary"), "{err}");
    // The OOM killer -> 137 and OOMKilled in inspect.
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--name",
            "hog",
            "--memory",
            "16m",
            &image,
            "sh",
            "-c",
            "x=a; while true; do x=$x$x; done",
        ],
    );
    assert_eq!(code, 137, "{err}\n{}", d.log());
    let inspect = d.ok(&["inspect", "hog"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["oom_killed"], true, "{inspect}");
    assert_eq!(v[0]["exit_code"], 137, "{inspect}");
    d.ok(&["rm", "hog"]);
}

#[test]
fn detached_containers_ps_logs_exec_stats_stop() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-e",
        "GREETING=hello",
        &image,
        "sh",
        "-c",
        "trap 'echo bye; exit 3' TERM; echo started $GREETING; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(
        eventually(10, || d.ok(&["logs", "web"]).contains("started hello")),
        "{}",
        d.log()
    );
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains(&id[..12]), "{ps}");
    // exec: output and exit code, by unique id prefix.
    let (code, out, _) = run(
        &d,
        &[
            "exec",
            &id[..8],
            "sh",
            "-c",
            "echo in-container $GREETING; exit 4",
        ],
    );
    assert_eq!((code, out.as_str()), (4, "in-container hello\n"));
    // stats from the container's own cgroup.
    let stats = d.ok(&["stats", "--no-stream", "--format", "json", "web"]);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        v[0]["stats"]["memory_usage"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        v[0]["stats"]["pids_current"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    // stop: the trap runs, exit 3 is recorded.
    d.ok(&["stop", "-t", "5", "web"]);
    let (code, out, _) = run(&d, &["wait", "web"]);
    assert_eq!((code, out.trim()), (0, "3"));
    let logs = d.ok(&["logs", "--tail", "1", "web"]);
    assert_eq!(logs, "bye\n");
    let ts = d.ok(&["logs", "--timestamps", "web"]);
    assert!(
        ts.lines().all(|l| l.len() > 30 && l.as_bytes()[4] == b'-'),
        "{ts}"
    );
    d.ok(&["rm", "web"]);
    assert!(!d.ok(&["ps", "-a"]).contains("web"));
}

#[test]
fn stop_kills_a_pid1_that_ignores_sigterm_after_the_grace_period() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        &image,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ]);
    let start = std::time::Instant::now();
    d.ok(&["stop", "-t", "1", "stubborn"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(8));
    assert_eq!(d.ok(&["wait", "stubborn"]).trim(), "137");
    d.ok(&["rm", "stubborn"]);
}

#[test]
fn containers_survive_a_daemon_sigkill_and_are_readopted() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "long",
        &image,
        "sh",
        "-c",
        "echo up; while true; do sleep 0.1; done",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "short",
        &image,
        "sh",
        "-c",
        "sleep 1; exit 5",
    ]);
    d.kill9();
    // While no daemon runs, "short" exits and "long" keeps running under its shim.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.spawn();
    // Recovery runs in the background: "short" is listed (as recovering) until its shim's
    // exit record was read.
    let mut ps = String::new();
    assert!(
        common::eventually(10, || {
            ps = d.ok(&["ps"]);
            ps.contains("long") && !ps.contains("short")
        }),
        "{ps}"
    );
    assert_eq!(d.ok(&["wait", "short"]).trim(), "5");
    assert!(d.ok(&["logs", "long"]).contains("up"));
    let (code, out, _) = run(&d, &["exec", "long", "echo", "still here"]);
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    d.ok(&["stop", "-t", "1", "long"]);
    d.ok(&["rm", "long", "short"]);
}

#[test]
fn bad_requests_get_clear_errors_and_leave_nothing_behind() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&["run", "-d", "--name", "taken", &image, "sleep", "30"]);
    let (code, _, err) = run(&d, &["run", "--name", "taken", &image, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("already in use"), "{err}");
    let (code, _, err) = run(
        &d,
        &["run", "--pull", "never", "zlayer.local/nope:1", "true"],
    );
    assert_eq!(code, 125);
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = run(&d, &["run", "-v", "relative:dir", &image, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("must be absolute"), "{err}");
    let (code, _, err) = run(&d, &["run", "--user", "nosuchuser", &image, "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("nosuchuser"), "{err}");
    let (code, _, err) = run(&d, &["rm", "taken"]);
    assert_eq!(code, 1);
    assert!(err.contains("running"), "{err}");
    d.ok(&["rm", "-f", "taken"]);
    // Only the containers we removed ever existed: no directories, no records.
    assert_eq!(d.ok(&["ps", "-a", "--format", "json"]).trim(), "[]");
    assert_eq!(
        std::fs::read_dir(d.root().join("containers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn volumes_users_and_read_only_rootfs() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from host").unwrap();
    let bind = format!("{}:/data:ro", host.path().display());
    let (code, out, err) = run(&d, &["run", "--rm", "-v", &bind, "-v", "cache:/cache", "--tmpfs", "/scratch",
        "-u", "app", "-w", "/cache", "--read-only", &image, "sh", "-c",
        "cat /data/in.txt; echo; id -u; pwd; touch /x 2>/dev/null || echo ro-root; touch /scratch/ok && echo tmpfs-ok"]);
    assert_eq!(code, 0, "{err}\n{}", d.log());
    assert_eq!(out, "from host\n1000\n/cache\nro-root\ntmpfs-ok\n");
    assert!(d.ok(&["volume", "ls"]).contains("cache"));
    d.ok(&["volume", "rm", "cache"]);
}

#[test]
fn stdin_reaches_run_i_and_exec_i() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let (code, out, err) = common::run_with_stdin(
        &d,
        &[
            "run",
            "-i",
            "--rm",
            &image,
            "sh",
            "-c",
            "tr a-z A-Z; exit 3",
        ],
        b"hello\nworld\n",
    );
    assert_eq!(code, 3, "{err}\n{}", d.log());
    assert_eq!(out, "HELLO\nWORLD\n");
    d.ok(&["run", "-d", "--name", "box", &image, "sleep", "60"]);
    let (code, out, err) =
        common::run_with_stdin(&d, &["exec", "-i", "box", "wc", "-c"], &[b'x'; 100_000]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "100000");
    d.ok(&["rm", "-f", "box"]);
}

#[test]
fn privileged_containers_get_the_hosts_devices_and_capabilities() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let count = "find /dev -type c -o -type b | grep -v ^/dev/pts | wc -l";
    let (_, plain, _) = run(&d, &["run", "--rm", &image, "sh", "-c", count]);
    let (code, privileged, err) = run(
        &d,
        &["run", "--rm", "--privileged", &image, "sh", "-c", count],
    );
    assert_eq!(code, 0, "{err}");
    let plain: usize = plain.trim().parse().unwrap();
    let privileged: usize = privileged.trim().parse().unwrap();
    let host = std::process::Command::new("sh")
        .args(["-c", count])
        .output()
        .unwrap();
    let host: usize = String::from_utf8_lossy(&host.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(
        privileged > plain || host <= plain,
        "privileged {privileged}, plain {plain}, host {host}"
    );
    // Full capability set: CapEff all ones in the low bits.
    let (_, caps, _) = run(
        &d,
        &[
            "run",
            "--rm",
            "--privileged",
            &image,
            "sh",
            "-c",
            "grep CapEff /proc/self/status",
        ],
    );
    assert!(
        caps.contains("000001ff") || caps.contains("000003ff") || caps.contains("ffffffff"),
        "{caps}"
    );
}

/// `run --env-file` reads files as `docker run --env-file` does: values literally, a bare name
/// from the CLI's own environment (left out when unset there), `-e` on top; a bad line is
/// refused naming the file and line, before anything is created.
#[test]
fn env_file_is_read_like_docker() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let dir = d.dir.path().join("envfiles");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("app.env");
    std::fs::write(
        &good,
        "# comment\n\nA=1\n  B=\"quoted\" $A \nFROM_CALLER\nNOT_IN_CALLER\nC=file\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--socket")
        .arg(d.socket())
        .args(["run", "--rm", "--env-file"])
        .arg(&good)
        .args(["-e", "C=flag", &image, "sh", "-c"])
        .arg("echo \"[$A][$B][$FROM_CALLER][${NOT_IN_CALLER-unset}][$C]\"")
        .env("FROM_CALLER", "from the caller")
        .env_remove("NOT_IN_CALLER")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim_end(),
        "[1][\"quoted\" $A ][from the caller][unset][flag]"
    );

    let bad = dir.join("bad.env");
    std::fs::write(&bad, "A=1\nBAD KEY=2\n=3\n").unwrap();
    let bad_name = bad.display().to_string();
    let (code, _, err) = run(
        &d,
        &["run", "--rm", "--env-file", &bad_name, &image, "true"],
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{bad_name}:2:1: variable name `BAD KEY` contains whitespace"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{bad_name}:3:1: no variable name before `=`")),
        "{err}"
    );
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}

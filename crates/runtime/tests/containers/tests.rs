//! The container tests themselves.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use zlayer_runtime::RunOptions;
use zlayer_runtime::{ClientError, ShimStatus, StreamEvent};
use zlayer_runtime::{ExecSpec, Stream};

use crate::fixture::*;

type R = Result<(), Failed>;

pub fn check(cond: bool, msg: impl Into<String>) -> R {
    if cond {
        Ok(())
    } else {
        Err(msg.into().into())
    }
}

fn start(name: &str, cmd: &[&str], opts: RunOptions) -> Result<TestContainer, Failed> {
    TestContainer::start(name, cmd, opts).map_err(|e| Failed::from(format!("start: {e}")))
}

pub fn all() -> Vec<Trial> {
    vec![
        Trial::test("exit_code_and_logs", exit_code_and_logs),
        Trial::test("killed_by_signal_is_128_plus_n", killed_by_signal),
        Trial::test("oom_kill_is_137_and_flagged", oom_kill),
        Trial::test(
            "missing_executable_is_127_and_leaves_nothing",
            missing_executable,
        ),
        Trial::test("not_executable_is_126", not_executable),
        Trial::test("unknown_user_fails_cleanly", unknown_user),
        Trial::test("exec_output_exit_code_stdin_user", exec_works),
        Trial::test("stop_escalates_to_sigkill", stop_escalates),
        Trial::test("stop_with_term_handler_is_graceful", stop_graceful),
        Trial::test("shim_survives_its_spawner", survives_spawner),
        Trial::test("exit_while_daemon_away_is_recorded", exit_while_away),
        Trial::test("exec_leaves_init_running", tick_exec),
        Trial::test(
            "exit_removes_cgroup_and_state_with_an_exec_running",
            exit_tears_down,
        ),
        Trial::test("logs_rotate_and_follow", logs_rotate_follow),
        Trial::test("network_none_has_loopback_only", network_none),
        Trial::test("stats_from_own_cgroup", stats),
        Trial::test("user_and_groups_resolved", user_resolution),
        Trial::test("read_only_rootfs", read_only),
        Trial::test("attach_stdin", attach_stdin),
        Trial::test("env_workdir_hostname_hosts", env_workdir_hostname),
        Trial::test("security_defaults", security_defaults),
        Trial::test("limits_applied", limits_applied),
        Trial::test("volumes_bind_and_tmpfs", volumes),
        Trial::test(
            "start_gate_waits_for_go_and_adds_the_address",
            start_gate_go,
        ),
        Trial::test(
            "start_gate_closed_cancels_and_leaves_nothing",
            start_gate_cancel,
        ),
        Trial::test("device_nodes_denied", devices_denied),
        Trial::test("cgroup_v2_pure_host", crate::cgroup_v2::pure_v2_host),
    ]
}

fn gate_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

/// The shim creates the container, waits at its start gate, and starts it on `go IP`, with
/// that address in /etc/hosts (the daemon's overlap of CNI ADD with container creation).
fn start_gate_go() -> R {
    use std::os::fd::AsFd;
    let (r, w) = gate_pipe();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut w = std::fs::File::from(w);
        std::io::Write::write_all(&mut w, b"go 10.9.8.7\n").expect("writing the gate");
    });
    let mut t = TestContainer::paths("gate");
    let t0 = Instant::now();
    t.launch_gated(
        &["cat", "/etc/hosts"],
        RunOptions::default(),
        Some(r.as_fd()),
    )
    .map_err(|e| Failed::from(format!("start: {e}")))?;
    let waited = t0.elapsed();
    opener.join().expect("gate thread");
    check(
        waited >= Duration::from_millis(300),
        format!("the container started after {waited:?}, before the gate opened"),
    )?;
    let rec = t.client().wait().map_err(|e| Failed::from(e.to_string()))?;
    check(rec.exit_code == 0, format!("exit {rec:?}"))?;
    let hosts = t.log_text();
    let hostname = std::fs::read_to_string(t.dir.join("hostname")).unwrap_or_default();
    check(
        hosts.contains(&format!("10.9.8.7\t{}", hostname.trim())),
        format!("/etc/hosts lacks the gate's address for {hostname:?}:\n{hosts}"),
    )
}

/// A gate closed without `go` (the network attachment failed, or the daemon died) cancels the
/// start, and nothing of the container remains.
fn start_gate_cancel() -> R {
    use std::os::fd::AsFd;
    let (r, w) = gate_pipe();
    drop(w);
    let mut t = TestContainer::paths("gatex");
    let err = match t.launch_gated(&["true"], RunOptions::default(), Some(r.as_fd())) {
        Ok(()) => return Err("started although the gate was closed".into()),
        Err(e) => e.to_string(),
    };
    check(err.contains("start cancelled"), format!("error: {err}"))?;
    assert_nothing_left(&t);
    Ok(())
}

fn exit_code_and_logs() -> R {
    let t = start(
        "exit",
        &["sh", "-c", "echo hi; echo oops >&2; printf partial; exit 7"],
        RunOptions::default(),
    )?;
    let rec = t.client().wait()?;
    check(rec.exit_code == 7, format!("exit {rec:?}"))?;
    check(rec.signal.is_none() && !rec.oom_killed, format!("{rec:?}"))?;
    check(rec.started_at.is_some(), "started_at")?;
    let log = t.log_text();
    check(
        log.contains("hi\n") && log.contains("oops\n") && log.contains("partial"),
        format!("log: {log:?}"),
    )?;
    let raw = std::fs::read_to_string(t.dir.join("container.log"))?;
    check(
        raw.lines().any(|l| l.ends_with(" stdout F hi")),
        format!("raw log {raw}"),
    )?;
    check(
        raw.lines().any(|l| l.ends_with(" stderr F oops")),
        format!("raw log {raw}"),
    )?;
    check(
        raw.lines().any(|l| l.ends_with(" stdout P partial")),
        format!("raw log {raw}"),
    )?;
    // The shim is gone, the record stays readable.
    match t.client().status()? {
        ShimStatus::Exited(r) => check(r.exit_code == 7, "status after exit"),
        s => Err(format!("status {s:?}").into()),
    }
}

fn killed_by_signal() -> R {
    let t = start("sig", &["sleep", "1000"], RunOptions::default())?;
    let c = t.client();
    check(matches!(c.status()?, ShimStatus::Running { .. }), "running")?;
    c.kill(libc::SIGKILL, false)?;
    let rec = c.wait()?;
    check(
        rec.exit_code == 137 && rec.signal == Some(9),
        format!("{rec:?}"),
    )?;
    // n = 15 on a non-init process (PID 1 ignores signals it has no handler for).
    let t = start("sig15", &["sleep", "1000"], RunOptions::default())?;
    let out = t
        .client()
        .exec_output(&execspec(&["sh", "-c", "kill -TERM $$; sleep 5"]), None)?;
    check(
        out.exit_code == 143,
        format!("exec killed by TERM: {out:?}"),
    )
}

fn oom_kill() -> R {
    let opts = RunOptions {
        memory: Some(16 << 20),
        ..Default::default()
    };
    let t = start("oom", &["tail", "/dev/zero"], opts)?;
    let rec = t.client().wait()?;
    check(rec.exit_code == 137, format!("{rec:?}"))?;
    check(rec.oom_killed, format!("oom flag: {rec:?}"))
}

fn missing_executable() -> R {
    let t = TestContainer::paths("missing");
    let id = t.id.clone();
    let res = TestContainer::start_with_paths(t, &["/no/such/binary", "x"], RunOptions::default());
    let (t, e) = match res {
        (t, Err(e)) => (t, e),
        (_, Ok(())) => return Err("started a missing executable".into()),
    };
    check(
        e.exit_code() == 127,
        format!("exit code {} for {e}", e.exit_code()),
    )?;
    let msg = e.to_string();
    check(
        msg.contains("/no/such/binary") && msg.contains("not found"),
        format!("message: {msg}"),
    )?;
    check(t.id == id, "id")?;
    assert_nothing_left(&t);
    Ok(())
}

fn not_executable() -> R {
    let (t, r) = TestContainer::start_with_paths(
        TestContainer::paths("noexec"),
        &["/bin/notexec"],
        RunOptions::default(),
    );
    let e = match r {
        Err(e) => e,
        Ok(()) => return Err("started a non-executable file".into()),
    };
    check(
        e.exit_code() == 126,
        format!("exit code {} for {e}", e.exit_code()),
    )?;
    assert_nothing_left(&t);
    Ok(())
}

fn unknown_user() -> R {
    let opts = RunOptions {
        user: Some("nobody-here".into()),
        ..Default::default()
    };
    let (t, r) = TestContainer::start_with_paths(TestContainer::paths("nouser"), &["true"], opts);
    let e = match r {
        Err(e) => e,
        Ok(()) => return Err("started with an unknown user".into()),
    };
    check(
        e.to_string().contains("unable to find user nobody-here"),
        e.to_string(),
    )?;
    assert_nothing_left(&t);
    Ok(())
}

pub fn execspec(args: &[&str]) -> ExecSpec {
    ExecSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn exec_works() -> R {
    let t = start("exec", &["sleep", "1000"], RunOptions::default())?;
    let c = t.client();
    let out = c.exec_output(
        &execspec(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
        None,
    )?;
    check(out.exit_code == 3, format!("{out:?}"))?;
    check(
        out.stdout == b"out\n" && out.stderr == b"err\n",
        format!("{out:?}"),
    )?;
    // an exec'd process gets the container's seccomp filter, once
    let out = c.exec_output(
        &execspec(&["sh", "-c", "grep -E '^Seccomp(_filters)?:' /proc/self/status; unshare -U true && echo userns-created || echo userns-denied"]),
        None,
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check(
        text == "Seccomp:\t2\nSeccomp_filters:\t1\nuserns-denied\n",
        format!("{out:?}"),
    )?;
    let out = c.exec_output(&execspec(&["cat"]), Some(b"hello stdin"))?;
    check(
        out.stdout == b"hello stdin" && out.exit_code == 0,
        format!("{out:?}"),
    )?;
    let mut s = execspec(&["sh", "-c", "id -u; echo $FOO; pwd"]);
    s.user = Some("app".into());
    s.env = vec!["FOO=bar".into()];
    s.cwd = Some("/tmp".into());
    let out = c.exec_output(&s, None)?;
    check(out.stdout == b"1000\nbar\n/tmp\n", format!("{out:?}"))?;
    match c.exec(&execspec(&["nosuchcmd"])) {
        Err(ClientError::Exec {
            exit_code: Some(127),
            message,
            ..
        }) => check(message.contains("nosuchcmd"), message)?,
        Err(e) => return Err(format!("exec missing: {e}").into()),
        Ok(_) => return Err("exec of a missing command started".into()),
    }
    // streaming: output arrives before the process ends
    let mut sess = c.exec(&execspec(&["sh", "-c", "echo first; sleep 1; echo second"]))?;
    let t0 = Instant::now();
    match sess.next_event()? {
        Some(StreamEvent::Output(Stream::Stdout, d)) => check(d == b"first\n", "first chunk")?,
        e => return Err(format!("{e:?}").into()),
    }
    check(
        t0.elapsed() < Duration::from_millis(900),
        "output was not streamed",
    )?;
    Ok(())
}

fn stop_escalates() -> R {
    let t = start("stop", &["sleep", "1000"], RunOptions::default())?;
    let t0 = Instant::now();
    let rec = t.client().stop(Duration::from_secs(1), libc::SIGTERM)?;
    let el = t0.elapsed();
    check(rec.exit_code == 137, format!("{rec:?}"))?;
    check(
        el >= Duration::from_secs(1) && el < Duration::from_secs(5),
        format!("took {el:?}"),
    )
}

fn stop_graceful() -> R {
    let t = start(
        "stopg",
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
        ],
        RunOptions::default(),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let rec = t.client().stop(Duration::from_secs(10), libc::SIGTERM)?;
    check(rec.exit_code == 0, format!("{rec:?}"))?;
    check(
        t0.elapsed() < Duration::from_secs(3),
        "graceful stop took too long",
    )?;
    check(t.log_text().contains("bye"), "trap output")
}

/// `spawn-helper ID DIR STATE CMD...`: launches a container and waits to be killed,
/// standing in for a daemon that dies.
pub fn spawn_helper(args: &[OsString]) -> i32 {
    let s = |i: usize| args[i].to_string_lossy().into_owned();
    let mut t = TestContainer {
        log_max_size: 10 << 20,
        id: s(0),
        dir: s(1).into(),
        state: s(2).into(),
        cgroup_parent: CGROUP_PARENT.to_string(),
        launched: None,
    };
    let cmd: Vec<String> = args[3..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cmd: Vec<&str> = cmd.iter().map(|s| s.as_str()).collect();
    let r = t.launch_here(&cmd, RunOptions::default());
    std::mem::forget(t); // leave the container to the next "daemon"
    match r {
        Ok(()) => {
            println!("started");
            std::thread::sleep(Duration::from_secs(3600));
            0
        }
        Err(e) => {
            println!("error {e}");
            1
        }
    }
}

fn run_helper(t: &TestContainer, cmd: &[&str]) -> Result<std::process::Child, Failed> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env("ZLRT_BASE", base())
        .arg("spawn-helper")
        .arg(&t.id)
        .arg(&t.dir)
        .arg(&t.state)
        .args(cmd)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    if line.trim() != "started" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("helper: {line}").into());
    }
    Ok(child)
}

fn survives_spawner() -> R {
    let t = TestContainer::paths("survive");
    let mut helper = run_helper(
        &t,
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    )?;
    helper.kill()?; // SIGKILL, like a crashed daemon
    helper.wait()?;
    std::thread::sleep(Duration::from_millis(500));
    let c = t.client();
    check(
        matches!(c.status()?, ShimStatus::Running { .. }),
        "container died with its spawner",
    )?;
    let a = t.log_text().matches("tick").count();
    std::thread::sleep(Duration::from_millis(700));
    let b = t.log_text().matches("tick").count();
    check(b > a, format!("ticks stopped BEFORE exec: {a} -> {b}"))?;
    let out = c.exec_output(&execspec(&["echo", "still here"]), None)?;
    check(out.stdout == b"still here\n", format!("{out:?}"))?;
    let n0 = t.log_text().matches("tick").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.log_text().matches("tick").count() <= n0 {
        check(
            Instant::now() < deadline,
            "log no longer written after the exec",
        )?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let rec = c.stop(Duration::from_secs(1), libc::SIGTERM)?;
    check(
        rec.exit_code == 137 || rec.exit_code == 143,
        format!("{rec:?}"),
    )
}

fn exit_while_away() -> R {
    let t = TestContainer::paths("away");
    let mut helper = run_helper(&t, &["sh", "-c", "sleep 0.5; exit 5"])?;
    helper.kill()?;
    helper.wait()?;
    std::thread::sleep(Duration::from_millis(1500));
    match t.client().status()? {
        ShimStatus::Exited(rec) => check(rec.exit_code == 5, format!("{rec:?}")),
        s => Err(format!("still {s:?}").into()),
    }
}

fn stats() -> R {
    let opts = RunOptions {
        memory: Some(64 << 20),
        pids_limit: Some(50),
        ..Default::default()
    };
    let t = start(
        "stats",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=1M count=200; sleep 1000 & wait",
        ],
        opts,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let s = zlayer_runtime::read_stats(&t.cgroups_path())?;
    check(s.memory_usage > 0, format!("{s:?}"))?;
    check(s.memory_limit == Some(64 << 20), format!("{s:?}"))?;
    check(
        s.pids_current >= 2 && s.pids_limit == Some(50),
        format!("{s:?}"),
    )?;
    check(s.cpu_usage_ns > 0, format!("{s:?}"))?;
    let by_dir = zlayer_runtime::read_container_stats(&t.dir)?;
    check(by_dir.memory_limit == Some(64 << 20), format!("{by_dir:?}"))
}

fn user_resolution() -> R {
    let opts = RunOptions {
        user: Some("app".into()),
        ..Default::default()
    };
    let t = start("user", &["sh", "-c", "id; echo $HOME"], opts)?;
    let rec = t.client().wait()?;
    let log = t.log_text();
    check(rec.exit_code == 0, format!("{rec:?} {log}"))?;
    // busybox `id` lists the supplementary groups only
    check(
        log.contains("uid=1000(app) gid=1000(app) groups=10(wheel)"),
        log.clone(),
    )?;
    check(log.contains("/home/app"), log)
}

fn read_only() -> R {
    let opts = RunOptions {
        read_only: true,
        workdir: Some("/created/by/us".into()),
        ..Default::default()
    };
    let t = start("ro", &["sh", "-c", "pwd; touch /x"], opts)?;
    let rec = t.client().wait()?;
    let log = t.log_text();
    check(rec.exit_code == 1, format!("{rec:?} {log}"))?;
    check(
        log.contains("/created/by/us") && log.contains("Read-only file system"),
        log,
    )
}

fn attach_stdin() -> R {
    let opts = RunOptions {
        interactive: true,
        ..Default::default()
    };
    let t = start("attach", &["sh", "-c", "read l; echo got:$l; exit 4"], opts)?;
    let c = t.client();
    let mut a = c.attach(true)?;
    let mut w = a.stdin()?;
    w.write(b"hello\n")?;
    w.close()?;
    let mut out = Vec::new();
    loop {
        match a.next_event()? {
            Some(StreamEvent::Output(_, d)) => out.extend(d),
            Some(StreamEvent::Exit { exit_code, .. }) => {
                check(exit_code == 4, format!("exit {exit_code}"))?;
                break;
            }
            None => return Err("attach ended without exit".into()),
        }
    }
    check(out == b"got:hello\n", String::from_utf8_lossy(&out))
}

fn env_workdir_hostname() -> R {
    let opts = RunOptions {
        env: vec!["FOO=bar".into(), "FROM_IMAGE=overridden".into()],
        workdir: Some("/srv/app".into()),
        hostname: Some("myhost".into()),
        extra_hosts: vec![("db".into(), "10.1.2.3".parse().unwrap())],
        ..Default::default()
    };
    let t = start("env", &["sh", "-c", "echo $FOO $FROM_IMAGE; pwd; hostname; cat /etc/hostname; grep db /etc/hosts; cat /etc/resolv.conf | grep -c nameserver"], opts)?;
    let rec = t.client().wait()?;
    let log = t.log_text();
    check(rec.exit_code == 0, format!("{rec:?} {log}"))?;
    check(
        log.contains("bar overridden\n/srv/app\nmyhost\nmyhost\n10.1.2.3\tdb\n"),
        log,
    )
}

fn security_defaults() -> R {
    let t = start(
        "sec",
        &["sh", "-c", "grep -E '^(CapBnd|Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status; grep -E ' /proc/(sys|keys) ' /proc/mounts; wc -c < /proc/keys; mount -t tmpfs t /mnt 2>&1; unshare -U true && echo userns-created || echo userns-denied"],
        RunOptions::default(),
    )?;
    t.client().wait()?;
    let log = t.log_text();
    check(log.contains("CapBnd:\t00000000a80425fb"), log.clone())?;
    // exactly one filter (the shim's, not also libcontainer's)
    check(
        log.contains("Seccomp:\t2\nSeccomp_filters:\t1\n") && log.contains("NoNewPrivs:\t1"),
        log.clone(),
    )?;
    // A new user namespace needs no capability, only the profile forbids it (unshare
    // without CAP_SYS_ADMIN): denied means the filter is in force, not just present.
    check(log.contains("userns-denied"), log.clone())?;
    // ... installed by the shim from its compiled cache, not compiled by libcontainer:
    // config.json no longer carries the profile, seccomp.json and one cached program do.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.dir.join("config.json"))?)?;
    check(
        config["linux"].get("seccomp").is_none()
            && config["annotations"]["org.zlayer.seccomp.sha256"].is_string()
            && t.dir.join("seccomp.json").is_file(),
        format!("{config}"),
    )?;
    let cached: Vec<_> = std::fs::read_dir(t.state.join("seccomp"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "bpf"))
        .collect();
    check(!cached.is_empty(), "no compiled seccomp program cached")?;
    // /proc/sys read-only, /proc/keys masked (an empty file mounted over it)
    check(log.contains("proc /proc/sys proc ro,"), log.clone())?;
    check(
        log.contains(" /proc/keys ") && log.contains("\n0\n"),
        log.clone(),
    )?;
    check(log.contains("mount: permission denied"), log.clone())?;
    check(
        !log.contains("WARN") && !log.contains("libcontainer"),
        "runtime messages leaked into the container's log",
    )?;
    // privileged: full caps, no seccomp
    let opts = RunOptions {
        privileged: true,
        ..Default::default()
    };
    let t = start("priv", &["sh", "-c", "grep -E '^(Seccomp):' /proc/self/status; mkdir /mnt; mount -t tmpfs t /mnt && echo mounted; unshare -U true && echo userns-created"], opts)?;
    t.client().wait()?;
    let log = t.log_text();
    check(
        log.contains("Seccomp:\t0") && log.contains("mounted"),
        log.clone(),
    )?;
    // the same unshare works where no profile applies: the denial above is seccomp's
    check(log.contains("userns-created"), log)
}

fn limits_applied() -> R {
    let opts = RunOptions {
        ulimits: vec![zlayer_runtime::Ulimit::parse("nofile=1024:2048").unwrap()],
        cpus: Some(0.5),
        pids_limit: Some(20),
        ..Default::default()
    };
    let t = start(
        "limits",
        &["sh", "-c", "ulimit -n; ulimit -Hn; sleep 1000"],
        opts,
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let cg = zlayer_runtime::cgroups::ContainerCgroup::new(&t.cgroups_path());
    if cg.is_v2() {
        check(
            cg.read("cpu", "cpu.max").as_deref() == Some("50000 100000"),
            "cpu.max",
        )?;
    } else {
        check(
            cg.read("cpu", "cpu.cfs_quota_us").as_deref() == Some("50000"),
            "cfs quota",
        )?;
    }
    check(
        cg.read("pids", "pids.max").as_deref() == Some("20"),
        "pids.max",
    )?;
    let log = t.log_text();
    check(log.contains("1024\n2048\n"), log)
}

fn volumes() -> R {
    let host = base().join(format!("vol-{}", new_id("v")));
    std::fs::create_dir_all(&host)?;
    std::fs::write(host.join("in.txt"), "from host")?;
    let opts = RunOptions {
        mounts: vec![
            zlayer_runtime::VolumeMount {
                source: zlayer_runtime::VolumeSource::Bind(host.clone()),
                target: "/data".into(),
                read_only: false,
            },
            zlayer_runtime::VolumeMount {
                source: zlayer_runtime::VolumeSource::Bind(host.clone()),
                target: "/ro".into(),
                read_only: true,
            },
            zlayer_runtime::VolumeMount {
                source: zlayer_runtime::VolumeSource::Tmpfs {
                    size: Some(1 << 20),
                },
                target: "/scratch".into(),
                read_only: false,
            },
        ],
        ..Default::default()
    };
    let t = start("vol", &["sh", "-c", "cat /data/in.txt; echo; echo out > /data/out.txt; touch /ro/x 2>&1; grep /scratch /proc/mounts | cut -d' ' -f3"], opts)?;
    let rec = t.client().wait()?;
    let log = t.log_text();
    check(rec.exit_code == 0, format!("{rec:?} {log}"))?;
    check(
        log.contains("from host") && log.contains("Read-only") && log.contains("tmpfs"),
        log,
    )?;
    check(
        std::fs::read_to_string(host.join("out.txt"))? == "out\n",
        "write through bind",
    )?;
    std::fs::remove_dir_all(&host)?;
    Ok(())
}

/// When the init exits while an exec'd process still runs, the shim ends that process (its
/// client gets 137), removes the container's cgroup in every hierarchy and libcontainer's
/// state, and only then answers `wait` (the shim's own teardown, not libcontainer's delete).
fn exit_tears_down() -> R {
    let t = start("teardown", &["sleep", "1000"], RunOptions::default())?;
    let c = t.client();
    let mut exec = c.exec(&execspec(&["sleep", "1000"]))?;
    // The exec'd process is in the container's cgroup before the init goes.
    let cg = zlayer_runtime::cgroups::ContainerCgroup::new(&t.cgroups_path());
    let procs_dir = cg.dir("pids").ok_or("no pids cgroup directory")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(procs_dir.join("cgroup.procs"))?
        .lines()
        .count()
        < 2
    {
        check(
            Instant::now() < deadline,
            "exec'd process never joined the cgroup",
        )?;
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill(libc::SIGKILL, false)?;
    let rec = c.wait()?;
    check(rec.exit_code == 137, format!("{rec:?}"))?;
    let v2 = zlayer_runtime::cgroups::is_v2();
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let dirs = zlayer_runtime::cgroups::teardown::cgroup_dirs(&mounts, v2, &t.cgroups_path());
    check(!dirs.is_empty(), "no cgroup directories to check")?;
    for d in &dirs {
        check(
            !d.exists(),
            format!("cgroup {} left after wait", d.display()),
        )?;
    }
    check(
        !t.state.join("runtime").join(&t.id).exists(),
        "libcontainer state left after wait",
    )?;
    let mut end = None;
    while let Some(ev) = exec.next_event()? {
        if let StreamEvent::Exit { exit_code, .. } = ev {
            end = Some(exit_code);
        }
    }
    check(end == Some(137), format!("exec ended with {end:?}"))
}

fn tick_exec() -> R {
    let t = start(
        "tick",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        RunOptions::default(),
    )?;
    let c = t.client();
    std::thread::sleep(Duration::from_millis(300));
    let out = c.exec_output(&execspec(&["echo", "still here"]), None)?;
    check(out.stdout == b"still here\n", format!("{out:?}"))?;
    let n0 = t.log_text().matches("tick").count();
    std::thread::sleep(Duration::from_millis(1500));
    let n1 = t.log_text().matches("tick").count();
    check(n1 > n0 + 1, format!("ticks {n0} -> {n1}"))
}

fn logs_rotate_and_follow_body(t: &TestContainer) -> R {
    use zlayer_runtime::logs::LogReader;
    // Follow from the start while the container writes 3000 numbered lines with a
    // 16 KiB rotation size: every line arrives once, in order, across rotations.
    let mut r = LogReader::open(&t.dir, None, true, None)?;
    let mut got = Vec::new();
    while let Some(e) = r.next_entry()? {
        got.push(String::from_utf8_lossy(&e.text).into_owned());
    }
    let want: Vec<String> = (1..=3000).map(|i| format!("line {i}")).collect();
    check(
        got == want,
        format!(
            "followed {} lines, first {:?} last {:?}",
            got.len(),
            got.first(),
            got.last()
        ),
    )?;
    check(
        t.dir.join("container.log.1").exists() && t.dir.join("container.log.2").exists(),
        "rotated files",
    )?;
    check(!t.dir.join("container.log.3").exists(), "only 3 files kept")?;
    // --tail on the finished log
    let tail = zlayer_runtime::logs::read_all(&t.dir, Some(2))?;
    let tail: Vec<String> = tail
        .iter()
        .map(|e| String::from_utf8_lossy(&e.text).into_owned())
        .collect();
    check(tail == ["line 2999", "line 3000"], format!("{tail:?}"))
}

fn logs_rotate_follow() -> R {
    let mut t = TestContainer::paths("logs");
    t.log_max_size = 16 * 1024;
    t.launch_here(
        &["sh", "-c", "sleep 0.3; i=1; while [ $i -le 3000 ]; do echo line $i; i=$((i+1)); if [ $((i % 300)) = 0 ]; then sleep 0.05; fi; done"],
        RunOptions::default(),
    )
    .map_err(|e| Failed::from(format!("start: {e}")))?;
    logs_rotate_and_follow_body(&t)
}

fn network_none() -> R {
    let t = start(
        "netnone",
        &[
            "sh",
            "-c",
            "ip -o link; ping -c1 -W1 127.0.0.1 >/dev/null && echo PING-OK",
        ],
        RunOptions::default(),
    )?;
    t.client().wait()?;
    let log = t.log_text();
    let links: Vec<&str> = log.lines().filter(|l| l.contains(": <")).collect();
    check(
        links.len() == 1 && links[0].contains("lo:") && links[0].contains(",UP"),
        log.clone(),
    )?;
    check(log.contains("PING-OK"), log)
}

/// `major:minor` of the host's first block device, for the device-rule test (opened
/// read-only, nothing is read from it).
fn host_block_device() -> Option<(u32, u32)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/dev/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.iter().find_map(|n| {
        let (a, b) = n.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
}

type Starter<'a> = &'a dyn Fn(&str, &[&str], RunOptions) -> Result<TestContainer, Failed>;

/// A default container must not open a device node outside the allowed set even when it
/// creates one (CAP_MKNOD is in docker's default set): the device cgroup (v1) or eBPF
/// device filter (v2) refuses it. A privileged container may open it (the control).
pub fn device_check(start: Starter<'_>) -> R {
    let (maj, min) = host_block_device().ok_or("no block device in /sys/dev/block")?;
    let script = format!(
        "mknod /dev/zlt-blk b {maj} {min} 2>&1; \
         if (: < /dev/zlt-blk) 2>/dev/null; then echo OPENED; else echo DENIED; fi"
    );
    let t = start("devdeny", &["sh", "-c", &script], RunOptions::default())?;
    t.client().wait()?;
    let log = t.log_text();
    check(
        log.contains("DENIED") && !log.contains("OPENED"),
        format!("an unprivileged container opened block device {maj}:{min}: {log}"),
    )?;
    let privileged = RunOptions {
        privileged: true,
        ..Default::default()
    };
    let t = start("devpriv", &["sh", "-c", &script], privileged)?;
    t.client().wait()?;
    let log = t.log_text();
    check(
        log.contains("OPENED"),
        format!("a privileged container could not open {maj}:{min}: {log}"),
    )
}

fn devices_denied() -> R {
    device_check(&start)
}

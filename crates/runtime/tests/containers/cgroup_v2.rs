//! Containers on a pure cgroup v2 host, run for real on any host with cgroup2 support.
//!
//! The trial re-executes this binary as `<test-binary> cgroup-v2 PARENT`. That helper
//! process, still single-threaded, enters a private mount namespace, detaches the host's
//! /sys/fs/cgroup tree there and mounts a cgroup2 filesystem in its place: libcontainer
//! and our code then see a unified (v2) host, while the host's own mounts are untouched
//! (mount propagation is private). The shims the helper spawns inherit that namespace,
//! which disappears with its last process.
//!
//! The cgroup2 hierarchy itself is the host's (one per kernel), so what the test creates
//! there is cleaned up twice: by the helper (Drop guards) and by [`HostV2Guard`] in the
//! test process, which also kills leftover shims and restores the root's
//! `cgroup.subtree_control` (libcgroups enables every available controller there).
//!
//! What can be checked depends on the controllers the v2 root offers. On a hybrid host
//! (cpu, memory, pids bound to v1) only core files exist: limits must then be refused with
//! an error naming the missing controller, and stats give CPU (core `cpu.stat`) and a task
//! count, with memory reported as unavailable. Where a controller is available, the limit
//! is applied and read back instead.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use zlayer_runtime::cgroups::{is_v2, v2_root_controllers};
use zlayer_runtime::ClientError;
use zlayer_runtime::RunOptions;

use crate::fixture::*;
use crate::tests::{check, device_check, execspec};

type R = Result<(), Failed>;

/// Exit code of the helper when the host cannot provide a private v2 mount.
const PREREQ_EXIT: i32 = 77;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The trial: runs the helper and cleans up after it whatever it left.
pub fn pure_v2_host() -> R {
    let fs_list = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs_list.contains("\tcgroup2\n") {
        return skip_or_fail("the kernel has no cgroup2 filesystem");
    }
    let parent = format!("/zlayer-runtime-test-v2-{}", std::process::id());
    let mut guard = HostV2Guard::new(&parent);
    let mut child = Command::new(std::env::current_exe()?)
        .env("ZLRT_BASE", base())
        .arg("cgroup-v2")
        .arg(&parent)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    guard.helper_pid = Some(child.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cgroup v2 helper did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match status.code() {
        Some(0) => {
            eprint!("{text}");
            Ok(())
        }
        Some(PREREQ_EXIT) => skip_or_fail(text.trim()),
        _ => Err(format!("cgroup v2 helper failed ({status}):\n{text}").into()),
    }
}

fn skip_or_fail(why: &str) -> R {
    if std::env::var("CI").as_deref() == Ok("true") {
        return Err(format!("prerequisite missing under CI=true: {why}").into());
    }
    eprintln!("skipping cgroup v2 test: {why}");
    Ok(())
}

/// Mount point of the host's cgroup2 hierarchy, if it has one mounted.
fn host_cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

fn subtree_control(root: &Path) -> Vec<String> {
    fs::read_to_string(root.join("cgroup.subtree_control"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// In the test process (host mount namespace): on drop, kills what the helper may have
/// left (container processes in our cgroups, shims of the helper's containers), removes
/// our cgroups and turns off the controllers libcgroups enabled at the v2 root.
struct HostV2Guard {
    root: Option<PathBuf>,
    parent: String,
    subtree_before: Vec<String>,
    helper_pid: Option<u32>,
}

impl HostV2Guard {
    fn new(parent: &str) -> Self {
        let root = host_cgroup2_mount();
        let subtree_before = root.as_deref().map(subtree_control).unwrap_or_default();
        HostV2Guard {
            root,
            parent: parent.to_string(),
            subtree_before,
            helper_pid: None,
        }
    }
}

impl Drop for HostV2Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.helper_pid {
            // ids of the helper's containers are `<name>-<helper pid>-<seq>`
            for shim in shim_processes(&format!("-{pid}-")) {
                // SAFETY: kill has no memory-safety preconditions; the pid is a shim of ours.
                unsafe { libc::kill(shim, libc::SIGKILL) };
            }
        }
        let Some(root) = &self.root else { return };
        let parent = root.join(self.parent.trim_start_matches('/'));
        if let Ok(entries) = fs::read_dir(&parent) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                let _ = fs::write(e.path().join("cgroup.kill"), "1");
                for _ in 0..50 {
                    if fs::remove_dir(e.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = fs::remove_dir(&parent);
        for c in subtree_control(root) {
            if !self.subtree_before.contains(&c) {
                let _ = fs::write(root.join("cgroup.subtree_control"), format!("-{c}"));
            }
        }
    }
}

/// `cgroup-v2 PARENT`: the helper. Returns its exit code.
pub fn helper_main(args: &[OsString]) -> i32 {
    let Some(parent) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        eprintln!("usage: cgroup-v2 PARENT");
        return 2;
    };
    if let Err(e) = enter_private_v2_host() {
        eprintln!("cannot set up a private cgroup v2 mount: {e}");
        return PREREQ_EXIT;
    }
    let _parent_cg = RemoveDirOnDrop(Path::new(CGROUP_ROOT).join(parent.trim_start_matches('/')));
    match std::panic::catch_unwind(|| checks(&parent)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("FAILED: {}", e.message().unwrap_or("(no message)"));
            1
        }
        Err(_) => 1, // the panic message was printed already
    }
}

/// Removes an (empty) cgroup directory on drop.
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Private mount namespace with cgroup2 at /sys/fs/cgroup. Must run single-threaded
/// (unshare of the mount namespace applies to the calling thread only).
fn enter_private_v2_host() -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    // Nothing we mount or unmount from here on propagates to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    if !is_v2() {
        // The host's v1 tree (tmpfs plus one mount per hierarchy), detached in this
        // namespace only, so that nothing of v1 remains visible to libcontainer.
        umount2(CGROUP_ROOT, MntFlags::MNT_DETACH)
            .map_err(|e| format!("detaching {CGROUP_ROOT} in the private namespace: {e}"))?;
    }
    mount(
        Some("cgroup2"),
        CGROUP_ROOT,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting cgroup2 at {CGROUP_ROOT}: {e}"))?;
    if !is_v2() {
        return Err(format!("{CGROUP_ROOT} is still not cgroup2 after mounting"));
    }
    Ok(())
}

fn start_v2(
    parent: &str,
    name: &str,
    cmd: &[&str],
    opts: RunOptions,
) -> (TestContainer, Result<(), ClientError>) {
    let mut t = TestContainer::paths(name);
    t.cgroup_parent = parent.to_string();
    let r = t.launch_here(cmd, opts);
    (t, r)
}

fn started(
    parent: &str,
    name: &str,
    cmd: &[&str],
    opts: RunOptions,
) -> Result<TestContainer, Failed> {
    match start_v2(parent, name, cmd, opts) {
        (t, Ok(())) => Ok(t),
        (_, Err(e)) => Err(format!("start {name}: {e}").into()),
    }
}

fn wait_for_log(t: &TestContainer, needle: &str) -> R {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !t.log_text().contains(needle) {
        check(
            Instant::now() < deadline,
            format!("no {needle:?} in the log: {}", t.log_text()),
        )?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn cgroup_dir(t: &TestContainer) -> PathBuf {
    Path::new(CGROUP_ROOT).join(t.cgroups_path().trim_start_matches('/'))
}

fn checks(parent: &str) -> R {
    check(is_v2(), "our code does not see a v2 host")?;
    let available = v2_root_controllers();
    eprintln!("cgroup v2 root controllers here: {available:?}");
    let has = |c: &str| available.iter().any(|a| a == c);

    run_in_own_cgroup_with_stats(parent, has("memory"), has("pids"))?;

    // exit code, and the cgroup is gone once the exit is recorded
    let t = started(
        parent,
        "v2exit",
        &["sh", "-c", "echo bye; exit 3"],
        RunOptions::default(),
    )?;
    let rec = t.client().wait()?;
    check(rec.exit_code == 3, format!("exit record {rec:?}"))?;
    check(!cgroup_dir(&t).exists(), "cgroup left after the exit")?;
    check(t.log_text().contains("bye"), t.log_text())?;
    drop(t);

    // device rules are enforced on v2 too (eBPF device filter)
    device_check(&|name, cmd, opts| started(parent, name, cmd, opts))?;

    limits(parent, "memory", "--memory", has("memory"))?;
    limits(parent, "pids", "--pids-limit", has("pids"))?;
    limits(parent, "cpu", "--cpus", has("cpu"))?;
    Ok(())
}

/// Starts a container, checks it is alone in its own cgroup (and sees itself at the root of
/// a cgroup namespace), reads stats, execs into it, stops it, checks its cgroup is removed.
fn run_in_own_cgroup_with_stats(parent: &str, memory: bool, pids: bool) -> R {
    let t = started(
        parent,
        "v2run",
        &[
            "sh",
            "-c",
            "cat /proc/self/cgroup; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; \
             sleep 1000 & echo ready; wait",
        ],
        RunOptions::default(),
    )?;
    wait_for_log(&t, "ready")?;
    let init = t
        .launched
        .as_ref()
        .map(|l| l.handle.init_pid)
        .ok_or("no init pid")?;
    let dir = cgroup_dir(&t);
    check(
        dir.is_dir(),
        format!("no cgroup directory {}", dir.display()),
    )?;
    let own = fs::read_to_string(format!("/proc/{init}/cgroup"))?;
    check(
        own.lines().any(|l| l == format!("0::{}", t.cgroups_path())),
        format!("init's /proc/{init}/cgroup: {own}"),
    )?;
    let procs = fs::read_to_string(dir.join("cgroup.procs"))?;
    check(
        procs.lines().any(|l| l == init.to_string()),
        format!("init {init} not in cgroup.procs: {procs}"),
    )?;
    check(
        t.log_text().contains("0::/\n"),
        format!(
            "container does not see its own cgroup as root: {}",
            t.log_text()
        ),
    )?;

    let s = zlayer_runtime::read_stats(&t.cgroups_path())?;
    check(s.cpu_usage_ns > 0 && s.has("cpu"), format!("cpu: {s:?}"))?;
    check(s.pids_current >= 2 && s.has("pids"), format!("pids: {s:?}"))?;
    if memory {
        check(
            s.memory_usage > 0 && s.has("memory"),
            format!("memory: {s:?}"),
        )?;
    } else {
        check(
            !s.has("memory") && s.memory_limit.is_none(),
            format!("memory must be unavailable without its controller: {s:?}"),
        )?;
    }
    if pids {
        check(s.pids_limit.is_none(), format!("pids limit: {s:?}"))?;
    }
    check(s.cpu_limit.is_none(), format!("cpu limit: {s:?}"))?;
    let by_dir = zlayer_runtime::read_container_stats(&t.dir)?;
    check(by_dir.cpu_usage_ns >= s.cpu_usage_ns, format!("{by_dir:?}"))?;

    // exec joins the same cgroup
    let out = t
        .client()
        .exec_output(&execspec(&["cat", "/proc/self/cgroup"]), None)?;
    // (a hybrid kernel still lists its v1 hierarchies here; the v2 line is what counts)
    let text = String::from_utf8_lossy(&out.stdout);
    check(
        out.exit_code == 0 && text.lines().any(|l| l == "0::/"),
        format!("exec's cgroup: {text}"),
    )?;

    let rec = t.client().stop(Duration::from_millis(300), libc::SIGTERM)?;
    check(
        rec.exit_code == 137 || rec.exit_code == 143,
        format!("stop: {rec:?}"),
    )?;
    check(
        !dir.exists(),
        format!("cgroup {} left after stop", dir.display()),
    )?;
    match zlayer_runtime::read_stats(&t.cgroups_path()) {
        Err(e) => check(e.to_string().contains("not found"), e.to_string()),
        Ok(s) => Err(format!("stats of a removed cgroup: {s:?}").into()),
    }
}

/// A limit that needs `controller`: applied and read back when the v2 root offers the
/// controller, otherwise refused with an error naming it, leaving nothing behind.
fn limits(parent: &str, controller: &str, option: &str, available: bool) -> R {
    let opts = match controller {
        "memory" => RunOptions {
            memory: Some(64 << 20),
            ..Default::default()
        },
        "pids" => RunOptions {
            pids_limit: Some(20),
            ..Default::default()
        },
        _ => RunOptions {
            cpus: Some(0.5),
            ..Default::default()
        },
    };
    let (t, r) = start_v2(parent, &format!("v2{controller}"), &["sleep", "1000"], opts);
    if available {
        r.map_err(|e| format!("{option} with the {controller} controller available: {e}"))?;
        let s = zlayer_runtime::read_stats(&t.cgroups_path())?;
        let ok = match controller {
            "memory" => s.memory_limit == Some(64 << 20),
            "pids" => s.pids_limit == Some(20),
            _ => s.cpu_limit == Some(0.5),
        };
        return check(ok, format!("{option} not applied: {s:?}"));
    }
    let e = match r {
        Err(e) => e.to_string(),
        Ok(()) => {
            return Err(format!("{option} accepted without the {controller} controller").into())
        }
    };
    check(
        e.contains(option)
            && e.contains(&format!("cgroup v2 \"{controller}\" controller"))
            && e.contains("/sys/fs/cgroup/cgroup.controllers"),
        format!("unclear error for {option}: {e}"),
    )?;
    assert_nothing_left(&t);
    check(
        !cgroup_dir(&t).exists(),
        format!("cgroup {} left", cgroup_dir(&t).display()),
    )
}

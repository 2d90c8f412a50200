//! A daemon per test: its own root, state and socket in a temp dir; stopped by PID on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zlayer-agent");

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// The private network (and mount) namespace the daemon runs in; `None`: the host's.
    pub netns: Option<NetNs>,
    /// Extra arguments for `zlayer-agent daemon` (e.g. `--metrics-addr`).
    pub daemon_args: Vec<String>,
}

/// A network + mount namespace made for one test (`unshare --net --mount`, loopback up), kept
/// alive by a sleeping holder process: bridges, veths, iptables rules and published ports of the
/// daemon started in it never reach the host's network set-up, and vanish with it.
pub struct NetNs {
    holder: Child,
}

impl NetNs {
    pub fn new() -> NetNs {
        use std::io::BufRead;
        let mut holder = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                "ip link set lo up && echo ready && exec sleep 100000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning unshare (util-linux) for the test's network namespace");
        let mut line = String::new();
        let stdout = holder.stdout.take().expect("holder stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the holder's ready line");
        assert_eq!(line.trim(), "ready", "network namespace holder failed");
        NetNs { holder }
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `nsenter` arguments that enter this namespace (network and mount).
    pub fn enter_args(&self) -> Vec<String> {
        vec![
            format!("--net=/proc/{}/ns/net", self.pid()),
            format!("--mount=/proc/{}/ns/mnt", self.pid()),
            "--".to_string(),
        ]
    }

    /// Runs a program inside the namespace (e.g. `busybox wget` against a published port).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(self.enter_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running nsenter")
    }
}

impl NetNs {
    /// Runs `f` on a thread that joined this network namespace (only that thread moves), so
    /// a probe's sockets (`TcpStream`, `UdpSocket`) live on the namespace's host side.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).expect("netns fd");
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("probe thread")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl TestDaemon {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// Starts a daemon in a network namespace of its own and waits until its API answers.
    pub fn start() -> TestDaemon {
        Self::start_with(Some(NetNs::new()), &[])
    }

    /// Starts a daemon (fresh root) in an existing namespace, e.g. one an earlier daemon of the
    /// test used (take it with `earlier.netns.take()` after stopping that one).
    pub fn start_in_ns(ns: NetNs) -> TestDaemon {
        Self::start_with(Some(ns), &[])
    }

    /// Starts a daemon in the host's network namespace (to reach a registry on the host's
    /// loopback). Such a daemon must not run bridge containers.
    pub fn start_host_net() -> TestDaemon {
        Self::start_with(None, &[])
    }

    /// [`TestDaemon::start_host_net`] with extra `daemon` arguments.
    pub fn start_host_net_with(daemon_args: &[&str]) -> TestDaemon {
        Self::start_with(None, daemon_args)
    }

    fn start_with(netns: Option<NetNs>, daemon_args: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("zlayer-test-")
            .tempdir()
            .expect("temp dir");
        let mut d = TestDaemon {
            dir,
            child: None,
            netns,
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// Starts a daemon in its own network namespace after `prepare` ran with the (empty) test
    /// directory and the namespace: to write a `config.json`, or mount a small filesystem at
    /// `root`/`state` inside the namespace (the mounts vanish with it).
    pub fn start_in(prepare: impl FnOnce(&Path, &NetNs)) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("zlayer-test-")
            .tempdir()
            .expect("temp dir");
        let ns = NetNs::new();
        prepare(dir.path(), &ns);
        let mut d = TestDaemon {
            dir,
            child: None,
            netns: Some(ns),
            daemon_args: Vec::new(),
        };
        d.spawn();
        d
    }

    /// The daemon's namespace (panics for a host-network daemon).
    pub fn ns(&self) -> &NetNs {
        self.netns
            .as_ref()
            .expect("daemon runs in the host namespace")
    }

    /// (Re)starts the daemon process on the same directories.
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("log file");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.args(ns.enter_args()).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .arg("--socket")
            .arg(self.socket())
            .arg("daemon")
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--config")
            .arg(self.write_config())
            .args(&self.daemon_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawning the daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket().exists() && self.cli(&["version"]).status.success() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `config.json` in the test's directory: `{}` unless the test wrote one before
    /// [`TestDaemon::spawn`] (see [`TestDaemon::start_in`]), or restarted the daemon with
    /// [`TestDaemon::stop`] and [`TestDaemon::spawn`] after writing it.
    fn write_config(&self) -> PathBuf {
        let path = self.dir.path().join("config.json");
        if !path.exists() {
            std::fs::write(&path, "{}").expect("config");
        }
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the CLI")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "zlayer-agent {args:?} failed with {}:\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILLs the daemon (containers and shims keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the daemon and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl TestDaemon {
    /// Removes everything the test left running: deployments first (so the supervisor does
    /// not replace what we remove), then every container. Containers outlive their daemon by
    /// design, so without this a test would leave shims, processes and mounts behind.
    fn remove_everything(&self) {
        let alive = self.child.is_some();
        if !alive {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(
            &self.cli(&["services", "--format", "json"]).stdout,
        ) {
            let mut deployments: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["deployment"].as_str().map(str::to_string))
                .collect();
            deployments.sort();
            deployments.dedup();
            for d in deployments {
                let _ = self.cli(&["undeploy", &d]);
            }
        }
        let ids = String::from_utf8_lossy(&self.cli(&["ps", "-aq"]).stdout).into_owned();
        for id in ids.split_whitespace() {
            let _ = self.cli(&["rm", "-f", id]);
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.remove_everything();
        self.stop();
        unmount_under(self.dir.path());
    }
}

/// Lazily unmounts whatever is still mounted under `dir` in the test process's mount namespace
/// (deepest first), so a daemon running in the host's namespace leaves no mount behind (e.g.
/// its network-namespace directory, which it keeps mounted on purpose, as `ip netns` does).
/// Daemons in a [`NetNs`] mount inside that namespace; nothing of theirs shows here.
fn unmount_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    // Field 5 is the mount point, with spaces etc. octal-escaped; temp dirs have none.
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The host tools the given bridge-network test needs (the CNI plugins, iptables, ...): true
/// when every one is there; a missing one fails the test under CI and skips it elsewhere.
pub fn require_tools(paths: &[&str]) -> bool {
    paths.iter().all(|bin| {
        zlayer_testkit::prereq::require(&format!("{bin} is missing"), Path::new(bin).exists())
    })
}

/// A daemon with the busybox fixture image loaded as `zlayer.local/test/busybox:latest`
/// (no registry needed), or `None` when prerequisites are missing outside CI.
pub fn daemon_with_busybox() -> Option<(TestDaemon, String)> {
    if !zlayer_testkit::prereq::require_root() {
        return None;
    }
    if !zlayer_testkit::prereq::require_filesystem("overlay") {
        return None;
    }
    let layout = zlayer_testkit::cached("busybox").expect("building the busybox fixture");
    let d = TestDaemon::start();
    let out = d.ok(&["load", "-i", &layout.dir.display().to_string()]);
    let name = out
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .unwrap_or_else(|| panic!("load printed no image name: {out}"))
        .trim()
        .to_string();
    Some((d, name))
}

/// Runs the CLI with stdin closed; returns (exit code, stdout, stderr).
pub fn run(d: &TestDaemon, args: &[&str]) -> (i32, String, String) {
    let out = d.cli(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs the CLI with `input` on its stdin; returns (exit code, stdout, stderr).
pub fn run_with_stdin(d: &TestDaemon, args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the CLI");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("writing stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("CLI output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI, killing it after `limit`: (exit code, stdout, stderr, elapsed). A hang is a
/// test failure, not a hung test.
pub fn run_within(
    d: &TestDaemon,
    args: &[&str],
    limit: Duration,
) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("zlayer-agent {args:?} hung for {limit:?}\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

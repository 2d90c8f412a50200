//! Test harness: every test runs in a fresh network + mount namespace.
//!
//! `netns_test!(name, body)` defines a `#[test]` that re-executes this test binary under
//! `unshare --net --mount`, running only that test, with an environment marker telling the child
//! it is inside. Everything the test does — bridges, veths, iptables rules, the CNI plugins it
//! execs, namespace bind mounts — lands in that private namespace, which vanishes when the child
//! exits. The machine's own interfaces, routes and firewall are never touched.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use zlayer_network::{NetworkManager, NetworkOptions};

const INSIDE: &str = "ZLAYER_NETWORK_TEST_INSIDE";
/// Scratch directory made by the outer process and removed by it after the child exits, when
/// the child's mount namespace (and any namespace bind mount inside the directory) is gone, so
/// even a panicking test leaves nothing behind.
const SCRATCH: &str = "ZLAYER_NETWORK_TEST_SCRATCH";

#[macro_export]
macro_rules! netns_test {
    ($name:ident, $body:block) => {
        #[test]
        fn $name() {
            common::in_fresh_netns(stringify!($name), || $body)
        }
    };
}

const TOOLS: &[&str] = &[
    "unshare",
    "nsenter",
    "ip",
    "iptables",
    "iptables-restore",
    "busybox",
    "timeout",
];
const PLUGINS: &[&str] = &["bridge", "host-local", "portmap"];

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("tests need root (network namespaces, bridges, iptables)".into());
    }
    for tool in TOOLS {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not found in PATH"));
        }
    }
    for plugin in PLUGINS {
        let p = Path::new("/usr/lib/cni").join(plugin);
        if !p.is_file() {
            return Some(format!(
                "CNI plugin {} missing (apt install containernetworking-plugins)",
                p.display()
            ));
        }
    }
    None
}

/// Run `body` inside a fresh network and mount namespace (see module docs).
pub fn in_fresh_netns(name: &str, body: impl FnOnce()) {
    if std::env::var(INSIDE).as_deref() == Ok(name) {
        run(&["ip", "link", "set", "lo", "up"]);
        body();
        return;
    }
    if let Some(missing) = missing_prerequisite() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name}: prerequisite missing under CI=true: {missing}");
        }
        eprintln!("SKIPPING {name}: {missing}");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().expect("current test executable");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, name)
        .env(SCRATCH, scratch.path())
        .status()
        .expect("running unshare");
    assert!(
        status.success(),
        "{name} failed inside its namespace: {status}"
    );
}

/// Run a command in the test's namespace; panic with its output on failure.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command inside the sandbox namespace at `netns`.
pub fn in_ns(netns: &Path, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .args(args)
        .output()
        .unwrap()
}

/// A background process inside a sandbox namespace, killed (by its PID) when dropped.
pub struct NsProcess(pub Child);

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_in_ns(netns: &Path, args: &[&str]) -> NsProcess {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    NsProcess(child)
}

/// busybox httpd serving `dir` on `port` inside the sandbox; waits until it accepts.
pub fn httpd_in_ns(netns: &Path, dir: &Path, port: u16) -> NsProcess {
    let p = spawn_in_ns(
        netns,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            &port.to_string(),
            "-h",
            dir.to_str().unwrap(),
        ],
    );
    wait_until(Duration::from_secs(5), || {
        wget(Some(netns), &format!("http://127.0.0.1:{port}/")).is_some()
    });
    p
}

pub fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything a test needs: temp dirs and a manager using them.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub opts: NetworkOptions,
}

impl Env {
    pub fn new() -> Self {
        let dir = match std::env::var_os(SCRATCH) {
            Some(scratch) => tempfile::tempdir_in(scratch).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let mut opts = NetworkOptions::new(dir.path().join("cni"), dir.path().join("state"));
        let resolv = dir.path().join("host-resolv.conf");
        fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
        opts.host_resolv_conf = resolv;
        Env { dir, opts }
    }

    pub fn manager(&self) -> NetworkManager {
        NetworkManager::open(self.opts.clone()).unwrap()
    }

    pub fn ipam_leases(&self, network: &str) -> Vec<String> {
        let dir: PathBuf = self.opts.state_dir.join("ipam").join(network);
        let mut out: Vec<String> = fs::read_dir(&dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// A directory with an `index.html` to serve.
    pub fn www(&self, content: &str) -> PathBuf {
        let d = self.dir.path().join(format!("www-{content}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("index.html"), content).unwrap();
        d
    }
}

/// HTTP GET via busybox wget inside `netns` (or in the test namespace when `None`), given up
/// after 3 s. (coreutils `timeout` rather than wget's `-T`: busybox 1.35's wget crashes with
/// SIGSEGV when `-T` is combined with a successful download.)
pub fn wget(netns: Option<&Path>, url: &str) -> Option<String> {
    let args = ["timeout", "3", "busybox", "wget", "-q", "-O", "-", url];
    let out = match netns {
        Some(ns) => in_ns(ns, &args),
        None => Command::new(args[0]).args(&args[1..]).output().unwrap(),
    };
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ping(netns: &Path, ip: &str) -> bool {
    in_ns(netns, &["busybox", "ping", "-c", "1", "-W", "2", ip])
        .status
        .success()
}

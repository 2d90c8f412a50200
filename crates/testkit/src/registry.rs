//! Launches Debian's `docker-registry` (CNCF distribution 2.x) on a free loopback port,
//! with its storage and log in a private temp dir, for tests that pull and push.

use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian's `docker-registry` package installs the binary.
pub const DEFAULT_REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long [`LocalRegistry::start`] waits for `GET /v2/` to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with a new port when the chosen one was taken between probe and bind.
const PORT_ATTEMPTS: usize = 5;

/// How to configure a [`LocalRegistry`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registry binary; default [`DEFAULT_REGISTRY_BIN`] or `$ZLAYER_REGISTRY_BIN`.
    pub bin: Option<PathBuf>,
    /// Require HTTP basic auth (htpasswd) with this user and password. Every request,
    /// pulls included, then needs `Authorization: Basic ...`.
    pub basic_auth: Option<(String, String)>,
}

/// A running `docker-registry` child process; killed (by its own PID only) on drop.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Option<Child>,
    addr: SocketAddr,
    // Dropped after the child is killed (field order + explicit stop in Drop).
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts a registry with the default binary ([`DEFAULT_REGISTRY_BIN`], or
    /// `$ZLAYER_REGISTRY_BIN` when set).
    pub fn start() -> Result<LocalRegistry> {
        Self::start_with_options(&RegistryOptions::default())
    }

    /// Starts a registry using `bin`.
    pub fn start_with(bin: &Path) -> Result<LocalRegistry> {
        Self::start_with_options(&RegistryOptions {
            bin: Some(bin.to_path_buf()),
            ..RegistryOptions::default()
        })
    }

    /// Starts a registry requiring basic auth with `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Result<LocalRegistry> {
        Self::start_with_options(&RegistryOptions {
            basic_auth: Some((user.to_string(), password.to_string())),
            ..RegistryOptions::default()
        })
    }

    /// Starts a registry as configured. Picks a free loopback port (bind :0, release, let
    /// the registry bind it) and retries with another port if the registry lost that race.
    pub fn start_with_options(opts: &RegistryOptions) -> Result<LocalRegistry> {
        let bin = opts.bin.clone().unwrap_or_else(|| {
            std::env::var_os("ZLAYER_REGISTRY_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRY_BIN))
        });
        let bin = bin.as_path();
        if !bin.exists() {
            bail!(
                "registry binary {} not found (Debian package `docker-registry`)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("zlayer-registry-")
            .tempdir()
            .context("creating registry temp dir")?;
        let mut last_err = None;
        for attempt in 0..PORT_ATTEMPTS {
            let port = free_loopback_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match spawn_and_wait(bin, dir.path(), addr, attempt, opts) {
                Ok(child) => {
                    return Ok(LocalRegistry {
                        child: Some(child),
                        addr,
                        dir,
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start"))).context(format!(
            "starting {} failed {PORT_ATTEMPTS} times",
            bin.display()
        ))
    }

    /// Socket address the registry listens on (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Directory holding the registry's storage (`storage/`), config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the registry's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// PID of the registry process, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the registry: SIGTERM, then SIGKILL after 5 s; waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child)?;
        }
        Ok(())
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("zlayer-testkit: stopping registry: {e:#}");
        }
    }
}

/// Binds 127.0.0.1:0 to learn a free port, then releases it.
pub fn free_loopback_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn write_config(dir: &Path, addr: SocketAddr, opts: &RegistryOptions) -> Result<PathBuf> {
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage)?;
    let mut auth = String::new();
    if let Some((user, password)) = &opts.basic_auth {
        anyhow::ensure!(
            !user.contains(':') && !user.contains('\n'),
            "basic-auth user {user:?} must not contain ':' or a newline"
        );
        // Low cost factor: tests verify passwords on every request.
        let hash = bcrypt::hash(password, 5).context("bcrypt-hashing the registry password")?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n"))
            .with_context(|| format!("writing {}", htpasswd.display()))?;
        auth = format!(
            "auth:\n  htpasswd:\n    realm: zlayer-test\n    path: {}\n",
            htpasswd.display()
        );
    }
    // Health checks and upload purging are off: no background goroutines touching storage.
    let cfg = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n\
         health:\n  storagedriver:\n    enabled: false\n\
         {auth}",
        storage = storage.display(),
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, cfg).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn spawn_and_wait(
    bin: &Path,
    dir: &Path,
    addr: SocketAddr,
    attempt: usize,
    opts: &RegistryOptions,
) -> Result<Child> {
    let config = write_config(dir, addr, opts)?;
    let log_path = dir.join("registry.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata()?.len();
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let url = format!("http://{addr}/v2/");
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "registry (attempt {}, {addr}) exited with {status} before answering; log tail:\n{}",
                attempt + 1,
                log_tail(&log_path, log_start)
            );
        }
        match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
            Ok(_) | Err(ureq::Error::Status(_, _)) => return Ok(child),
            Err(ureq::Error::Transport(_)) => {}
        }
        if Instant::now() > deadline {
            let _ = terminate(&mut child);
            bail!(
                "registry on {addr} did not answer GET /v2/ within {READY_TIMEOUT:?}; log tail:\n{}",
                log_tail(&log_path, log_start)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM the child (only that PID), wait up to 5 s, then SIGKILL and reap.
fn terminate(child: &mut Child) -> Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    // The child is not reaped yet (try_wait said so), so the PID cannot have been reused.
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().context("SIGKILL registry")?;
    child.wait().context("reaping registry")?;
    Ok(())
}

/// Last ~4 KiB of the log written since `from`.
fn log_tail(path: &Path, from: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = from.max(len.saturating_sub(4096));
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_string(&mut s);
        }
    }
    s
}

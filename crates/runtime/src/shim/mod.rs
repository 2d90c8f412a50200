//! The per-container shim process (`zlayer-agent shim ...`).
//!
//! Why a process per container: libcontainer changes the caller's working directory,
//! makes it non-dumpable and clones children running Rust code without fork handlers,
//! none of which is safe in the multi-threaded daemon. The shim is single-threaded (no
//! tokio), so it can call libcontainer freely.
//!
//! Life cycle:
//! 1. The process the daemon started forks the real shim and waits for one report line
//!    on a pipe, prints it on stdout and exits (0 = started). The daemon thus never has
//!    to reap the long-lived shim, and learns the start error (with its message).
//! 2. The real shim: new session (`setsid`), child subreaper, stdio on /dev/null and
//!    `shim.log`; binds `<state>/shims/<id>.sock`; creates and starts the container with
//!    pipes for its stdio; reports; then serves its socket and copies output into the
//!    CRI log until the container's init exits.
//! 3. At the end: OOM check, cgroup teardown (kills leftovers, removes the cgroup:
//!    [`crate::cgroups::teardown`]) and libcontainer's state removed, exit record renamed
//!    into place, waiters answered, socket removed, record fsynced, exit. The rootfs stays mounted: unmounting and deleting the container
//!    directory is the caller's `rm` (see [`crate::rootfs::remove`]).
//!
//! If anything fails before the container runs, everything the shim created is removed
//! (cgroup, libcontainer state, socket) before it reports the error.

/// Writes a diagnostic line to the shim's stderr (`shim.log` in the container directory).
/// Never `eprintln!` in the shim: it panics when the write fails, and a full disk must not end
/// the shim (leaving its container orphaned, unsupervised and without an exit record).
macro_rules! shim_log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// Layers, each using only those above it in this list:
// error (describing failures) -> seccomp_bpf, executor (what runs in the container's
// process) -> exec, start (creating processes) -> server (the event loop) -> this module,
// which hands the started container from `start` to `server`.
pub(crate) mod error;
mod exec;
pub(crate) mod executor;
pub(crate) mod seccomp_bpf;
mod server;
mod start;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Parsed `zlayer-agent shim` arguments.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub id: String,
    /// The container directory (bundle with config.json, logs, exit record).
    pub bundle: PathBuf,
    /// The state root (`--state`): libcontainer state in `runtime/`, sockets in `shims/`.
    pub state: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Give the container a stdin pipe (`run -i`).
    pub stdin: bool,
    /// Descriptor [`START_GATE_FD`] is the start gate: create the container, then wait for the
    /// spawner's `go` before starting it (see `start::pass_start_gate`).
    pub start_gate: bool,
}

/// Arguments `zlayer-agent shim` cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("non UTF-8 argument {0:?}")]
    NotUtf8(OsString),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{0}: not a number")]
    NotANumber(String),
    #[error("unknown shim argument {0:?}")]
    Unknown(String),
    #[error("{0} is required")]
    Required(&'static str),
}

/// The descriptor a gated shim gets its start gate on (`--start-gate`).
pub const START_GATE_FD: i32 = 3;

impl ShimArgs {
    /// The command-line arguments (after `shim`) describing these settings.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--state".into(),
            self.state.clone().into(),
            "--log-max-size".into(),
            self.log_max_size.to_string().into(),
            "--log-max-files".into(),
            self.log_max_files.to_string().into(),
        ];
        if self.stdin {
            v.push("--stdin".into());
        }
        if self.start_gate {
            v.push("--start-gate".into());
        }
        v
    }

    pub fn parse(args: &[OsString]) -> Result<ShimArgs, ArgsError> {
        let mut id = None;
        let mut bundle = None;
        let mut state = None;
        let mut log_max_size = crate::logs::DEFAULT_MAX_SIZE;
        let mut log_max_files = crate::logs::DEFAULT_MAX_FILES;
        let mut stdin = false;
        let mut start_gate = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let a = a.to_str().ok_or_else(|| ArgsError::NotUtf8(a.clone()))?;
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| ArgsError::MissingValue(name.to_string()))
            };
            match a {
                "--id" => id = Some(val(a)?.to_string_lossy().into_owned()),
                "--bundle" => bundle = Some(PathBuf::from(val(a)?)),
                "--state" => state = Some(PathBuf::from(val(a)?)),
                "--log-max-size" => {
                    log_max_size = val(a)?
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| ArgsError::NotANumber(a.to_string()))?
                }
                "--log-max-files" => {
                    log_max_files = val(a)?
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| ArgsError::NotANumber(a.to_string()))?
                }
                "--stdin" => stdin = true,
                "--start-gate" => start_gate = true,
                other => return Err(ArgsError::Unknown(other.to_string())),
            }
        }
        Ok(ShimArgs {
            id: id.ok_or(ArgsError::Required("--id"))?,
            bundle: bundle.ok_or(ArgsError::Required("--bundle"))?,
            state: state.ok_or(ArgsError::Required("--state"))?,
            log_max_size,
            log_max_files,
            stdin,
            start_gate,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.state, &self.id)
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.state.join("runtime")
    }
}

/// Where the shim of container `id` listens.
///
/// Named by the first 32 hex digits of the id (128 random bits): a unix socket path must fit
/// in 108 bytes, and the full 64-digit id would leave too little room for a `--state` path.
pub fn socket_path(state: &std::path::Path, id: &str) -> PathBuf {
    let short = &id[..id.len().min(32)];
    state.join("shims").join(format!("{short}.sock"))
}

/// The one line the shim reports to its spawner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartReport {
    pub ok: bool,
    /// Init pid of the started container.
    pub pid: Option<i32>,
    /// Pid of the long-lived shim.
    pub shim_pid: Option<i32>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
    /// Docker's exit status for start errors: 127 command not found, 126 not executable.
    pub exit_code: Option<i32>,
}

/// Entry point of `zlayer-agent shim ARGS...`; returns the process exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let args = match ShimArgs::parse(&args) {
        Ok(a) => a,
        Err(e) => {
            shim_log!("zlayer-agent shim: {e}");
            return 2;
        }
    };
    // Descriptors the spawner leaked to us (without CLOEXEC) must not be held for the
    // container's lifetime: a daemon's pipe would never see EOF. The start gate is kept, and
    // marked close-on-exec so that the container's process never inherits it.
    let first_leaked = if args.start_gate {
        START_GATE_FD + 1
    } else {
        START_GATE_FD
    };
    // SAFETY: close_range and fcntl only act on descriptors; nothing in this process uses
    // any descriptor above 2 at this point except the gate.
    unsafe {
        libc::syscall(libc::SYS_close_range, first_leaked as u32, u32::MAX, 0u32);
        if args.start_gate && libc::fcntl(START_GATE_FD, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            shim_log!("zlayer-agent shim: --start-gate given but descriptor 3 is not open");
            return 2;
        }
    }
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            shim_log!("zlayer-agent shim: pipe: {e}");
            return 2;
        }
    };
    // SAFETY: the shim is single-threaded at this point (nothing has spawned threads:
    // the CLI only parsed arguments), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            shim_log!("zlayer-agent shim: fork: {e}");
            2
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            if args.start_gate {
                // SAFETY: closing our copy of the gate; only the forked shim reads it.
                unsafe { libc::close(START_GATE_FD) };
            }
            relay_report(r)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let code = match start::run(args, w) {
                Some(started) => server::Server::new(started).run(),
                None => 1,
            };
            // Leave without running the spawner's atexit handlers or flushing its stdio.
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The spawner-facing half: copy the report to stdout; exit 0 when the container started.
fn relay_report(r: OwnedFd) -> i32 {
    let mut f = std::fs::File::from(r);
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let report: StartReport = match serde_json::from_str(s.trim()) {
        Ok(r) => r,
        Err(_) => StartReport {
            ok: false,
            pid: None,
            shim_pid: None,
            started_at: None,
            error: Some(format!(
                "the shim exited before reporting (see shim.log in the container directory){}",
                if s.is_empty() {
                    String::new()
                } else {
                    format!(": {s}")
                }
            )),
            exit_code: None,
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&crate::protocol::line(&report));
    let _ = out.flush();
    let _ = f.as_raw_fd();
    if report.ok {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn args_roundtrip_and_errors_name_the_argument() {
        let a = ShimArgs {
            id: "abc".into(),
            bundle: "/b".into(),
            state: "/s".into(),
            log_max_size: 10,
            log_max_files: 2,
            stdin: true,
            start_gate: false,
        };
        let back = ShimArgs::parse(&a.to_args()).unwrap();
        assert_eq!(back.to_args(), a.to_args());
        assert_eq!(
            ShimArgs::parse(&os(&["--id"])).unwrap_err(),
            ArgsError::MissingValue("--id".into())
        );
        assert_eq!(
            ShimArgs::parse(&os(&["--id", "x", "--bundle", "/b"])).unwrap_err(),
            ArgsError::Required("--state")
        );
        let e = ShimArgs::parse(&os(&["--log-max-size", "big"])).unwrap_err();
        assert_eq!(e.to_string(), "--log-max-size: not a number");
        assert_eq!(
            ShimArgs::parse(&os(&["--nope"])).unwrap_err(),
            ArgsError::Unknown("--nope".into())
        );
    }
}

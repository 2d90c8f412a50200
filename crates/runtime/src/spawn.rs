//! Starting a container's shim: the shim binary is run with the container's bundle, creates
//! and starts the container, reports on stdout and stays behind as the container's
//! supervisor. [`spawn_shim`] returns once the container runs (or failed to start); from
//! then on the daemon talks to the shim with [`ShimClient`](crate::client::ShimClient).
//!
//! Blocking; never calls libcontainer (the shim process does).

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};

use crate::client::{join_err, ClientError, ShimClient};
use crate::shim::{ShimArgs, StartReport, START_GATE_FD};

/// How to start a shim.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The shim command, e.g. `[current_exe, "shim"]`.
    pub shim_cmd: Vec<OsString>,
    pub id: String,
    /// Container directory holding config.json (written by [`crate::bundle::write_bundle`]).
    pub container_dir: PathBuf,
    /// State root (`--state`).
    pub state_dir: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Keep a stdin pipe for the container (`run -i`).
    pub stdin: bool,
    /// Read end of a start-gate pipe: the shim creates the container, then waits until the
    /// caller writes `go` (or `go IP`, the container's address for its /etc/hosts) and
    /// starts it; EOF without `go` cancels the start. The caller writes from another thread
    /// (spawn_shim blocks until the container runs) and keeps this descriptor open until
    /// spawn_shim returns. `None`: start right after create.
    pub start_gate: Option<RawFd>,
}

impl SpawnOptions {
    pub fn new(shim_cmd: Vec<OsString>, id: &str, container_dir: &Path, state_dir: &Path) -> Self {
        SpawnOptions {
            shim_cmd,
            id: id.to_string(),
            container_dir: container_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            log_max_size: crate::logs::DEFAULT_MAX_SIZE,
            log_max_files: crate::logs::DEFAULT_MAX_FILES,
            stdin: false,
            start_gate: None,
        }
    }
}

/// A running container's shim.
#[derive(Debug, Clone)]
pub struct ShimHandle {
    pub id: String,
    pub socket: PathBuf,
    pub container_dir: PathBuf,
    pub init_pid: i32,
    pub shim_pid: i32,
    pub started_at: DateTime<Utc>,
}

impl ShimHandle {
    pub fn client(&self) -> ShimClient {
        ShimClient::new(&self.socket, &self.container_dir, &self.id)
    }
}

/// Starts the shim and waits until the container runs, or returns the start error.
/// On error nothing of the shim remains (process, socket, cgroup, libcontainer state).
#[tracing::instrument(level = "debug", skip_all)]
pub fn spawn_shim(opts: &SpawnOptions) -> Result<ShimHandle, ClientError> {
    let (prog, pre) = opts
        .shim_cmd
        .split_first()
        .ok_or_else(|| ClientError::Start {
            id: opts.id.clone(),
            message: "empty shim command".into(),
            exit_code: None,
        })?;
    let args = ShimArgs {
        id: opts.id.clone(),
        bundle: opts.container_dir.clone(),
        state: opts.state_dir.clone(),
        log_max_size: opts.log_max_size,
        log_max_files: opts.log_max_files,
        stdin: opts.stdin,
        start_gate: opts.start_gate.is_some(),
    };
    let mut cmd = Command::new(prog);
    if let Some(gate) = opts.start_gate {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child before exec and only makes async-signal-safe
        // calls (dup2, fcntl) on descriptors; dup2 clears close-on-exec on the copy.
        unsafe {
            cmd.pre_exec(move || {
                let ok = if gate == START_GATE_FD {
                    libc::fcntl(gate, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(gate, START_GATE_FD) == START_GATE_FD
                };
                if ok {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }
    let out = cmd
        .args(pre)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| ClientError::Start {
            id: opts.id.clone(),
            message: format!("running shim {}: {e}", Path::new(prog).display()),
            exit_code: None,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report: StartReport =
        serde_json::from_str(text.trim()).map_err(|_| ClientError::Start {
            id: opts.id.clone(),
            message: format!(
                "shim failed ({}): {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            exit_code: None,
        })?;
    if !report.ok {
        return Err(ClientError::Start {
            id: opts.id.clone(),
            message: report.error.unwrap_or_else(|| "unknown error".into()),
            exit_code: report.exit_code,
        });
    }
    Ok(ShimHandle {
        id: opts.id.clone(),
        socket: args.socket_path(),
        container_dir: opts.container_dir.clone(),
        init_pid: report.pid.unwrap_or(0),
        shim_pid: report.shim_pid.unwrap_or(0),
        started_at: report.started_at.unwrap_or_else(Utc::now),
    })
}

/// [`spawn_shim`] on tokio's blocking pool.
pub async fn spawn_shim_async(opts: SpawnOptions) -> Result<ShimHandle, ClientError> {
    tokio::task::spawn_blocking(move || spawn_shim(&opts))
        .await
        .map_err(join_err)?
}

//! The exit record: how a container ended, written atomically by its shim into the
//! container directory so that it survives the shim and the daemon.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const EXIT_FILE: &str = "exit.json";

/// Exit status convention of docker: `128 + n` when killed by signal n.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The process exit code, or 128 + signal; 127/126 when the command could not be run.
    pub exit_code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
    /// The init pid on the host (useful for diagnostics only: it may be reused now).
    pub pid: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// Why the container could not start (missing executable, bad spec, ...).
    pub error: Option<String>,
}

impl ExitRecord {
    /// Builds the record from a wait status: exit code n, or 128 + signal.
    pub fn from_status(code: Option<i32>, signal: Option<i32>) -> (i32, Option<i32>) {
        match (code, signal) {
            (_, Some(s)) => (128 + s, Some(s)),
            (Some(c), None) => (c, None),
            (None, None) => (255, None),
        }
    }
}

pub fn exit_path(container_dir: &Path) -> PathBuf {
    container_dir.join(EXIT_FILE)
}

/// Writes the record with write-temp, fsync, rename.
pub fn write_exit_record(container_dir: &Path, rec: &ExitRecord) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    crate::atomic::write_file(&exit_path(container_dir), &data)
}

/// Puts the record in place for readers now; durable after [`crate::atomic::Unsynced::sync`].
pub fn publish_exit_record(
    container_dir: &Path,
    rec: &ExitRecord,
) -> io::Result<crate::atomic::Unsynced> {
    let data = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    crate::atomic::publish_file(&exit_path(container_dir), &data)
}

/// Space for the exit record, set aside when the container starts: a container that fills
/// the disk must not leave its own end unrecorded. Sized for any record the shim writes
/// (a few hundred bytes; the error text of a start failure is the only variable part).
pub fn reserve_exit_record(container_dir: &Path) -> io::Result<crate::atomic::Reservation> {
    crate::atomic::Reservation::create(&exit_path(container_dir), 8192)
}

/// [`publish_exit_record`] into the space reserved by [`reserve_exit_record`].
pub fn publish_reserved_exit_record(
    reservation: crate::atomic::Reservation,
    rec: &ExitRecord,
) -> io::Result<crate::atomic::Unsynced> {
    let data = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
    reservation.publish(&data)
}

/// Reads the record; `Ok(None)` when the container has not exited (or never started).
pub fn read_exit_record(container_dir: &Path) -> io::Result<Option<ExitRecord>> {
    let p = exit_path(container_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", p.display()))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
    }
}

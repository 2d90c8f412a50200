//! The agent's SQLite state (`agent.db` under `--root`): containers, and later services and
//! events. Images and snapshots keep their own tables in the same file (zlayer-image).
//!
//! SQLite because every record must survive a SIGKILL of the daemon: a committed transaction
//! is durable, and a torn one is rolled back on the next open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::error::{AgentError, Result};

/// The schema version this build writes; older databases are migrated forward on open.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    image        TEXT NOT NULL,
    image_id     TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    spec         TEXT NOT NULL,
    labels       TEXT NOT NULL DEFAULT '{}',
    state        TEXT NOT NULL,
    pid          INTEGER,
    exit_code    INTEGER,
    oom_killed   INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    auto_remove  INTEGER NOT NULL DEFAULT 0
);
";

/// Space kept free for the database beside it (`.db-reserve`, 4 MiB, allocated with
/// `fallocate`): when a container (or anything else) fills the filesystem of `--root`, the
/// next write of the state database fails with SQLITE_FULL, and with it `rm -f` of the very
/// container that would free the space. Then the reserve is deleted and the write retried:
/// SQLite gets the blocks it needs (a delete writes a few pages to the WAL), the removal goes
/// through and frees the container's files. The reserve is set aside again once there is
/// room ([`Db::replenish_reserve`], after each purge of a removed container).
///
/// Why a reserve file rather than "delete the files first, then the record": the record is
/// the daemon's truth (a record without files is a container it cannot run or explain), and
/// a disk filled by another process or by a container's log would still leave every other
/// database write failing. The reserve works whoever filled the disk.
const RESERVE_FILE: &str = ".db-reserve";
const RESERVE_BYTES: i64 = 4 << 20;

/// A connection to `agent.db`, shared behind a mutex: the agent's writes are small and rare
/// compared with the work they describe, so one connection is plenty.
pub struct Db {
    conn: Mutex<Connection>,
    reserve: PathBuf,
    /// The reserve was released (or could not be made) and should be made again.
    reserve_missing: AtomicBool,
}

/// Makes the reserve file: `fallocate` (no zeros written, but the blocks are the file's).
fn make_reserve(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let res = nix::fcntl::fallocate(
        f.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        RESERVE_BYTES,
    );
    match res {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            // Without fallocate: real zeros hold the blocks as well.
            use std::io::Write;
            let mut f = f;
            let chunk = vec![0u8; 64 << 10];
            for _ in 0..(RESERVE_BYTES as usize / chunk.len()) {
                f.write_all(&chunk)?;
            }
            Ok(())
        }
        Err(e) => {
            // A partial reserve is worse than none: it looks made but is not.
            drop(f);
            let _ = std::fs::remove_file(path);
            Err(e.into())
        }
    }
}

fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

fn db_err(e: rusqlite::Error) -> AgentError {
    AgentError::internal(format!("state database: {e}"))
}

impl Db {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| AgentError::internal(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        // WAL with synchronous=NORMAL: a commit is appended to the WAL without an fsync;
        // the WAL is fsynced at each checkpoint. Against what this file must survive, a
        // SIGKILL or crash of the daemon, that is as durable as FULL: committed pages are in
        // the kernel's page cache, which outlives the process. Only a power loss or kernel
        // crash can lose the last commits before a checkpoint, and it rolls them back
        // whole (never a torn or corrupt database). After such a loss every container is
        // dead anyway: a record that lost its exit update is completed from the shim's
        // (fsynced) exit record or marked lost on the next start; a record lost entirely
        // leaves its container directory behind, as a daemon killed mid-create does.
        // FULL cost an fsync per commit, three to four per `run` (several ms each on this
        // disk, far more under others' write load), on the hot path of every container
        // start and exit. (zlayer-image's connection to this file has used NORMAL all along.)
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err)?;
        if version > SCHEMA_VERSION {
            return Err(AgentError::internal(format!(
                "{} was written by a newer zlayer-agent (agent schema {version}, this build knows {SCHEMA_VERSION})",
                path.display()
            )));
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_err)?;
        let db = Self {
            conn: Mutex::new(conn),
            reserve: path.with_file_name(RESERVE_FILE),
            reserve_missing: AtomicBool::new(true),
        };
        db.replenish_reserve();
        Ok(db)
    }

    /// Runs `f` with the connection. When the disk is full, the reserve is released and `f`
    /// runs once more (see [`RESERVE_FILE`]).
    pub fn with<T>(&self, mut f: impl FnMut(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock();
        match f(&conn) {
            Err(e) if is_disk_full(&e) && self.release_reserve() => f(&conn).map_err(db_err),
            res => res.map_err(db_err),
        }
    }

    /// Deletes the reserve; `false` when there was none to give.
    fn release_reserve(&self) -> bool {
        match std::fs::remove_file(&self.reserve) {
            Ok(()) => {
                self.reserve_missing.store(true, Ordering::SeqCst);
                tracing::warn!(
                    "the filesystem of {} is full: released the state database's reserve ({} MiB) to go on; remove containers or images to free space",
                    self.reserve.display(),
                    RESERVE_BYTES >> 20
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Sets the reserve aside again if it was released and there is room now.
    pub fn replenish_reserve(&self) {
        if !self.reserve_missing.load(Ordering::SeqCst) {
            return;
        }
        match make_reserve(&self.reserve) {
            Ok(()) => self.reserve_missing.store(false, Ordering::SeqCst),
            Err(e) => tracing::debug!("reserve {}: {e}", self.reserve.display()),
        }
    }
}

//! The agent's SQLite state (`agent.db` under `--root`): containers, and later services and
//! events. Images and snapshots keep their own tables in the same file (zlayer-image).
//!
//! SQLite because every record must survive a SIGKILL of the daemon: a committed transaction
//! is durable, and a torn one is rolled back on the next open.

use std::path::Path;

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

/// A connection to `agent.db`, shared behind a mutex: the agent's writes are small and rare
/// compared with the work they describe, so one connection is plenty.
pub struct Db {
    conn: Mutex<Connection>,
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
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` with the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock();
        f(&conn).map_err(db_err)
    }
}

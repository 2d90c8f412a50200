//! The image side of `root/agent.db` (SQLite): tables `images`, `image_names`, `snapshots`.
//!
//! Why SQLite rather than sidecar files: the architecture keeps all daemon state in one
//! `agent.db`, and image records, names and snapshots change together (a pull records an image
//! and its names in one transaction; GC deletes rows and directories under one write lock, which
//! also serialises it against a snapshot commit in another process). WAL mode lets readers
//! (`images`, `inspect`) run while a pull writes. Our schema version lives in its own table
//! (`zlayer_image_schema`) because `PRAGMA user_version` is one number shared with the agent
//! crate's tables in the same file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

/// The schema this code writes. Bump with a migration step in [`migrate`].
pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
#[error("image metadata database {path}: {source}")]
pub struct DbError {
    pub path: PathBuf,
    #[source]
    pub source: rusqlite::Error,
}

/// A shared connection. Statements are short; nothing holds the lock across an unpack.
#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.path.display())
    }
}

impl Db {
    pub(crate) fn open(root: &Path) -> Result<Self, DbError> {
        let path = root.join("agent.db");
        let err = |source| DbError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        migrate(&conn).map_err(err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the guard cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned mutex is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> DbError {
        DbError {
            path: self.path.clone(),
            source,
        }
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS zlayer_image_schema (version INTEGER NOT NULL);",
    )?;
    let version: Option<i64> =
        conn.query_row("SELECT max(version) FROM zlayer_image_schema", [], |r| {
            r.get(0)
        })?;
    if version.unwrap_or(0) >= SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS snapshots (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             chain_id TEXT NOT NULL UNIQUE,
             parent TEXT,
             size INTEGER NOT NULL DEFAULT 0,
             created_at TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS images (
             manifest_digest TEXT PRIMARY KEY,
             config_digest TEXT NOT NULL,
             media_type TEXT NOT NULL,
             size INTEGER NOT NULL,
             created TEXT,
             os TEXT NOT NULL,
             architecture TEXT NOT NULL,
             variant TEXT,
             recorded_at TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS images_config ON images(config_digest);
         CREATE TABLE IF NOT EXISTS image_names (
             name TEXT PRIMARY KEY,
             manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE
         );
         CREATE INDEX IF NOT EXISTS image_names_manifest ON image_names(manifest_digest);
         DELETE FROM zlayer_image_schema;
         INSERT INTO zlayer_image_schema (version) VALUES (1);
         COMMIT;",
    )
}

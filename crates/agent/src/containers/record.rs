//! Container records: what the agent remembers of each container across daemon restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::error::{AgentError, Result};

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Recorded, shim not (yet) running.
    Created,
    /// The shim reports the process running.
    Running,
    /// The process ended; exit code recorded.
    Exited,
    /// Running, with its cgroup frozen (`pause`). Only the views (`ps`, `inspect`) show
    /// it: a record stays `running`, as the frozen cgroup is the truth (see `pause.rs`).
    Paused,
}

impl ContainerState {
    fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            // A paused container's record is a running one's (never stored as such).
            ContainerState::Running | ContainerState::Paused => "running",
            ContainerState::Exited => "exited",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "running" => ContainerState::Running,
            "exited" => ContainerState::Exited,
            _ => ContainerState::Created,
        }
    }
}

/// One container as stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's id (config digest) at creation.
    pub image_id: String,
    pub created_at: String,
    /// The run options, as the runtime crate serialises them.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Why the container failed to start, when it did.
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `run --rm`: removed once it exits.
    pub auto_remove: bool,
}

impl ContainerRecord {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let spec: String = row.get("spec")?;
        let labels: String = row.get("labels")?;
        let state: String = row.get("state")?;
        Ok(Self {
            id: row.get("id")?,
            name: row.get("name")?,
            image: row.get("image")?,
            image_id: row.get("image_id")?,
            created_at: row.get("created_at")?,
            spec: serde_json::from_str(&spec).unwrap_or(serde_json::Value::Null),
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            state: ContainerState::parse(&state),
            pid: row.get("pid")?,
            exit_code: row.get("exit_code")?,
            oom_killed: row.get::<_, i64>("oom_killed")? != 0,
            error: row.get("error")?,
            started_at: row.get("started_at")?,
            finished_at: row.get("finished_at")?,
            auto_remove: row.get::<_, i64>("auto_remove")? != 0,
        })
    }
}

/// The first 12 characters of an id, as docker shows ids.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The containers table.
#[derive(Clone)]
pub struct ContainerStore {
    db: Arc<Db>,
}

impl ContainerStore {
    /// The state database behind the store (for its disk reserve, see `db.rs`).
    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.db
    }

    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// Inserts a new record; a taken name is a conflict naming the holder.
    /// How many containers (in any state) the node has.
    pub fn count(&self) -> Result<usize> {
        let n: i64 = self
            .db
            .with(|c| c.query_row("SELECT COUNT(*) FROM containers", [], |row| row.get(0)))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn insert(&self, r: &ContainerRecord) -> Result<()> {
        self.insert_limited(r, usize::MAX)
    }

    /// Inserts `r` unless the node has `max` containers already (counted and inserted under
    /// the database's lock, so concurrent creates cannot pass the limit together).
    pub fn insert_limited(&self, r: &ContainerRecord, max: usize) -> Result<()> {
        if let Some(other) = self.by_name(&r.name)? {
            return Err(AgentError::conflict(format!(
                "the container name {:?} is already in use by container {}; remove it or pick another name",
                r.name,
                short_id(&other.id)
            )));
        }
        let inserted = self.db.with(|c| {
            let count: i64 =
                c.query_row("SELECT COUNT(*) FROM containers", [], |row| row.get(0))?;
            if usize::try_from(count).unwrap_or(usize::MAX) >= max {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO containers (id, name, image, image_id, created_at, spec, labels, state,
                    pid, exit_code, oom_killed, error, started_at, finished_at, auto_remove)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    r.id,
                    r.name,
                    r.image,
                    r.image_id,
                    r.created_at,
                    r.spec.to_string(),
                    serde_json::to_string(&r.labels).unwrap_or_else(|_| "{}".into()),
                    r.state.as_str(),
                    r.pid,
                    r.exit_code,
                    r.oom_killed as i64,
                    r.error,
                    r.started_at,
                    r.finished_at,
                    r.auto_remove as i64,
                ],
            )?;
            Ok(true)
        })?;
        if inserted {
            Ok(())
        } else {
            Err(crate::limits::too_many_containers(max))
        }
    }

    /// Writes the mutable fields of `r` (state, pid, exit, times, error).
    pub fn update(&self, r: &ContainerRecord) -> Result<()> {
        self.db.with(|c| {
            c.execute(
                "UPDATE containers SET state = ?2, pid = ?3, exit_code = ?4, oom_killed = ?5,
                    error = ?6, started_at = ?7, finished_at = ?8 WHERE id = ?1",
                params![
                    r.id,
                    r.state.as_str(),
                    r.pid,
                    r.exit_code,
                    r.oom_killed as i64,
                    r.error,
                    r.started_at,
                    r.finished_at
                ],
            )
        })?;
        Ok(())
    }

    /// Writes an exit into a record that is not `exited` yet; `false` when it already was.
    /// One statement, so the background watcher and a `wait` or `stop` that both learn the
    /// exit record it once (one log line, one DNS unregistration).
    pub fn mark_exited(&self, r: &ContainerRecord) -> Result<bool> {
        let changed = self.db.with(|c| {
            c.execute(
                "UPDATE containers SET state = 'exited', exit_code = ?2, oom_killed = ?3,
                    error = ?4, finished_at = ?5 WHERE id = ?1 AND state <> 'exited'",
                params![
                    r.id,
                    r.exit_code,
                    r.oom_killed as i64,
                    r.error,
                    r.finished_at
                ],
            )
        })?;
        Ok(changed > 0)
    }

    /// Gives container `id` the name `new`, unless another container holds it (then the
    /// holder's id is returned and nothing changes). Checked and written under the
    /// database's lock, so two renames to one name cannot both succeed.
    pub fn rename(&self, id: &str, new: &str) -> Result<std::result::Result<(), String>> {
        self.db.with(|c| {
            let holder: Option<String> = c
                .query_row(
                    "SELECT id FROM containers WHERE name = ?1 AND id <> ?2",
                    params![new, id],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(holder) = holder {
                return Ok(Err(holder));
            }
            c.execute(
                "UPDATE containers SET name = ?2 WHERE id = ?1",
                params![id, new],
            )?;
            Ok(Ok(()))
        })
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        self.db
            .with(|c| c.execute("DELETE FROM containers WHERE id = ?1", params![id]))?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<ContainerRecord>> {
        self.db.with(|c| {
            c.query_row(
                "SELECT * FROM containers WHERE id = ?1",
                params![id],
                ContainerRecord::from_row,
            )
            .optional()
        })
    }

    pub fn by_name(&self, name: &str) -> Result<Option<ContainerRecord>> {
        self.db.with(|c| {
            c.query_row(
                "SELECT * FROM containers WHERE name = ?1",
                params![name],
                ContainerRecord::from_row,
            )
            .optional()
        })
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        self.db.with(|c| {
            let mut stmt = c.prepare("SELECT * FROM containers ORDER BY created_at, id")?;
            let rows = stmt.query_map([], ContainerRecord::from_row)?;
            rows.collect()
        })
    }

    /// Finds a container by exact name, full id, or unique id prefix, as docker does.
    pub fn resolve(&self, key: &str) -> Result<ContainerRecord> {
        if key.is_empty() {
            return Err(AgentError::invalid("empty container name or id"));
        }
        if let Some(r) = self.by_name(key)? {
            return Ok(r);
        }
        let lowered = key.to_ascii_lowercase();
        if !lowered.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AgentError::not_found(format!("no such container: {key}")));
        }
        let pattern = format!("{lowered}%");
        let matches: Vec<ContainerRecord> = self.db.with(|c| {
            let mut stmt = c.prepare("SELECT * FROM containers WHERE id LIKE ?1 LIMIT 3")?;
            let rows = stmt.query_map(params![pattern], ContainerRecord::from_row)?;
            rows.collect()
        })?;
        match matches.len() {
            0 => Err(AgentError::not_found(format!("no such container: {key}"))),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(AgentError::invalid(format!(
                "{key} matches more than one container id; give more digits or the name"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            image: "busybox".into(),
            image_id: "sha256:x".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            spec: serde_json::json!({"cmd": ["true"]}),
            labels: BTreeMap::new(),
            state: ContainerState::Created,
            pid: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            auto_remove: false,
        }
    }

    #[test]
    fn resolves_by_name_and_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::new(Arc::new(Db::open(&dir.path().join("agent.db")).unwrap()));
        store.insert(&record("abc111", "web")).unwrap();
        store.insert(&record("abc222", "db")).unwrap();
        assert_eq!(store.resolve("web").unwrap().id, "abc111");
        assert_eq!(store.resolve("abc2").unwrap().name, "db");
        assert_eq!(store.resolve("ABC2").unwrap().name, "db");
        let e = store.resolve("abc").unwrap_err();
        assert!(e.message.contains("more than one"), "{e}");
        assert_eq!(
            store.resolve("nope").unwrap_err().kind,
            crate::ErrorKind::NotFound
        );
        let e = store.insert(&record("def", "web")).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Conflict);
        assert!(e.message.contains("abc111"), "{e}");
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        {
            let store = ContainerStore::new(Arc::new(Db::open(&path).unwrap()));
            let mut r = record("abc", "web");
            store.insert(&r).unwrap();
            r.state = ContainerState::Exited;
            r.exit_code = Some(7);
            store.update(&r).unwrap();
        }
        let store = ContainerStore::new(Arc::new(Db::open(&path).unwrap()));
        let r = store.resolve("web").unwrap();
        assert_eq!(r.state, ContainerState::Exited);
        assert_eq!(r.exit_code, Some(7));
        assert_eq!(r.spec["cmd"][0], "true");
    }
}

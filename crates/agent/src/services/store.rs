//! Desired state in `agent.db`: deployments as deployed (spec JSON, the YAML text, resolved
//! environment), per-service supervision facts that must survive a daemon restart (restart
//! count, a failed rollout's hash, job progress, the last cron fire), job/cron run history, each
//! slot's restart backoff (`service_backoff`) and per-replica supervision facts (`replica_state`:
//! the last health status, whether its exit was already counted as a restart).
//!
//! The tables are created with `IF NOT EXISTS`, so an `agent.db` of an older build gains them on
//! open and keeps everything it had.
//!
//! What actually runs is NOT stored here: the container records and their labels are the truth,
//! so a SIGKILL between "container started" and "row written" cannot produce duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use zlayer_spec::Deployment;

use super::backoff::SavedTracker;
use super::health::HealthStatus;
use super::key::ServiceKey;
use super::state::{JobState, RunState};
use crate::db::Db;
use crate::error::{AgentError, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deployments (
    name         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    source       TEXT NOT NULL,
    file         TEXT NOT NULL,
    env          TEXT NOT NULL DEFAULT '{}',
    deployed_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_status (
    deployment    TEXT NOT NULL,
    service       TEXT NOT NULL,
    restarts      INTEGER NOT NULL DEFAULT 0,
    failed_hash   TEXT,
    job_hash      TEXT,
    job_attempts  INTEGER NOT NULL DEFAULT 0,
    job_state     TEXT,
    job_exit_code INTEGER,
    last_fire     TEXT,
    PRIMARY KEY (deployment, service)
);
CREATE TABLE IF NOT EXISTS service_runs (
    deployment   TEXT NOT NULL,
    service      TEXT NOT NULL,
    run          INTEGER NOT NULL,
    container    TEXT NOT NULL,
    spec_hash    TEXT NOT NULL,
    scheduled_at TEXT NOT NULL,
    finished_at  TEXT,
    exit_code    INTEGER,
    state        TEXT NOT NULL,
    PRIMARY KEY (deployment, service, run)
);
CREATE TABLE IF NOT EXISTS service_backoff (
    deployment    TEXT NOT NULL,
    service       TEXT NOT NULL,
    slot          INTEGER NOT NULL,
    failures      INTEGER NOT NULL,
    started_ms    INTEGER,
    not_before_ms INTEGER,
    PRIMARY KEY (deployment, service, slot)
);
CREATE TABLE IF NOT EXISTS replica_state (
    id            TEXT PRIMARY KEY,
    health        TEXT,
    exit_counted  INTEGER NOT NULL DEFAULT 0
);
";

/// One deployment as stored.
#[derive(Debug, Clone)]
pub struct DeploymentRecord {
    pub spec: Deployment,
    /// The YAML text as deployed (for `deploy` diffs and for humans).
    pub source: String,
    pub file: String,
    /// Each service's container environment, resolved at deploy time (env files read,
    /// `from_host` values taken from the deploying client).
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    pub deployed_at: String,
}

/// Supervision facts of one service that survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceFacts {
    pub restarts: u64,
    /// Replica hash whose rollout failed; not retried until another deploy.
    pub failed_hash: Option<String>,
    /// Jobs: the replica hash the progress below belongs to.
    pub job_hash: Option<String>,
    pub job_attempts: u32,
    pub job_state: Option<JobState>,
    pub job_exit_code: Option<i64>,
    /// Cron: RFC 3339 time of the last fire (or of the deploy, before the first).
    pub last_fire: Option<String>,
}

/// One run of a job or cron entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub run: u32,
    pub container: String,
    pub spec_hash: String,
    pub scheduled_at: String,
    pub finished_at: Option<String>,
    pub exit_code: Option<i64>,
    pub state: RunState,
}

fn db_err(e: impl std::fmt::Display) -> AgentError {
    AgentError::internal(format!("services state: {e}"))
}

/// Typed access to the services tables.
#[derive(Clone)]
pub struct ServiceStore {
    db: Arc<Db>,
}

impl ServiceStore {
    /// Creates the tables when missing.
    pub fn open(db: Arc<Db>) -> Result<Self> {
        db.with(|c| c.execute_batch(SCHEMA))?;
        Ok(Self { db })
    }

    pub fn put_deployment(&self, r: &DeploymentRecord) -> Result<()> {
        let spec = serde_json::to_string(&r.spec).map_err(db_err)?;
        let env = serde_json::to_string(&r.env).map_err(db_err)?;
        self.db.with(|c| {
            c.execute(
                "INSERT INTO deployments (name, spec, source, file, env, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(name) DO UPDATE SET spec = ?2, source = ?3, file = ?4, env = ?5,
                    deployed_at = ?6",
                params![
                    r.spec.deployment,
                    spec,
                    r.source,
                    r.file,
                    env,
                    r.deployed_at
                ],
            )
            .map(drop)
        })
    }

    fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, String, String)> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    }

    fn decode(raw: (String, String, String, String, String)) -> Result<DeploymentRecord> {
        let (spec, source, file, env, deployed_at) = raw;
        Ok(DeploymentRecord {
            spec: serde_json::from_str(&spec).map_err(db_err)?,
            source,
            file,
            env: serde_json::from_str(&env).map_err(db_err)?,
            deployed_at,
        })
    }

    pub fn get_deployment(&self, name: &str) -> Result<Option<DeploymentRecord>> {
        let raw = self.db.with(|c| {
            c.query_row(
                "SELECT spec, source, file, env, deployed_at FROM deployments WHERE name = ?1",
                [name],
                Self::row,
            )
            .optional()
        })?;
        raw.map(Self::decode).transpose()
    }

    pub fn list_deployments(&self) -> Result<Vec<DeploymentRecord>> {
        let raws = self.db.with(|c| {
            let mut st = c.prepare(
                "SELECT spec, source, file, env, deployed_at FROM deployments ORDER BY name",
            )?;
            let rows = st.query_map([], Self::row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raws.into_iter().map(Self::decode).collect()
    }

    /// Forgets a deployment with its facts and run history.
    pub fn delete_deployment(&self, name: &str) -> Result<bool> {
        self.db.with(|c| {
            c.execute("DELETE FROM service_status WHERE deployment = ?1", [name])?;
            c.execute("DELETE FROM service_backoff WHERE deployment = ?1", [name])?;
            c.execute("DELETE FROM service_runs WHERE deployment = ?1", [name])?;
            c.execute("DELETE FROM deployments WHERE name = ?1", [name])
                .map(|n| n > 0)
        })
    }

    /// Forgets one service's facts and runs (it was removed from its deployment).
    pub fn forget_service(&self, key: &ServiceKey) -> Result<()> {
        self.db.with(|c| {
            c.execute(
                "DELETE FROM service_status WHERE deployment = ?1 AND service = ?2",
                [&key.deployment, &key.service],
            )?;
            c.execute(
                "DELETE FROM service_backoff WHERE deployment = ?1 AND service = ?2",
                [&key.deployment, &key.service],
            )?;
            c.execute(
                "DELETE FROM service_runs WHERE deployment = ?1 AND service = ?2",
                [&key.deployment, &key.service],
            )
            .map(drop)
        })
    }

    pub fn facts(&self, key: &ServiceKey) -> Result<ServiceFacts> {
        let f = self.db.with(|c| {
            c.query_row(
                "SELECT restarts, failed_hash, job_hash, job_attempts, job_state, job_exit_code,
                        last_fire
                 FROM service_status WHERE deployment = ?1 AND service = ?2",
                [&key.deployment, &key.service],
                |r| {
                    Ok(ServiceFacts {
                        restarts: r.get::<_, i64>(0)? as u64,
                        failed_hash: r.get(1)?,
                        job_hash: r.get(2)?,
                        job_attempts: r.get::<_, i64>(3)? as u32,
                        job_state: r.get(4)?,
                        job_exit_code: r.get(5)?,
                        last_fire: r.get(6)?,
                    })
                },
            )
            .optional()
        })?;
        Ok(f.unwrap_or_default())
    }

    pub fn put_facts(&self, key: &ServiceKey, f: &ServiceFacts) -> Result<()> {
        self.db.with(|c| write_facts(c, key, f))
    }

    /// The stored restart backoff of each slot of a service.
    pub fn backoff(&self, key: &ServiceKey) -> Result<Vec<(u32, SavedTracker)>> {
        self.db.with(|c| {
            let mut st = c.prepare(
                "SELECT slot, failures, started_ms, not_before_ms FROM service_backoff
                 WHERE deployment = ?1 AND service = ?2",
            )?;
            let rows = st.query_map([&key.deployment, &key.service], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u32,
                    SavedTracker {
                        failures: r.get::<_, i64>(1)? as u32,
                        started_ms: r.get(2)?,
                        not_before_ms: r.get(3)?,
                    },
                ))
            })?;
            rows.collect()
        })
    }

    /// Replaces the stored backoff of a service's slots with `slots` (one transaction).
    pub fn put_backoff(&self, key: &ServiceKey, slots: &[(u32, SavedTracker)]) -> Result<()> {
        self.db.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM service_backoff WHERE deployment = ?1 AND service = ?2",
                [&key.deployment, &key.service],
            )?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO service_backoff
                        (deployment, service, slot, failures, started_ms, not_before_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (slot, t) in slots {
                    st.execute(params![
                        key.deployment,
                        key.service,
                        i64::from(*slot),
                        i64::from(t.failures),
                        t.started_ms,
                        t.not_before_ms
                    ])?;
                }
            }
            tx.commit()
        })
    }

    /// Records that container `id`'s exit was counted (restart count in `facts`, backoff of
    /// its slot), all in one transaction, so a daemon restart neither counts it again nor
    /// loses the count.
    pub fn count_exit(
        &self,
        key: &ServiceKey,
        facts: &ServiceFacts,
        id: &str,
        slot: u32,
        tracker: SavedTracker,
    ) -> Result<()> {
        self.db.with(|c| {
            let tx = c.unchecked_transaction()?;
            write_facts(&tx, key, facts)?;
            tx.execute(
                "INSERT INTO replica_state (id, exit_counted) VALUES (?1, 1)
                 ON CONFLICT(id) DO UPDATE SET exit_counted = 1",
                [id],
            )?;
            tx.execute(
                "INSERT INTO service_backoff
                    (deployment, service, slot, failures, started_ms, not_before_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(deployment, service, slot) DO UPDATE SET failures = ?4,
                    started_ms = ?5, not_before_ms = ?6",
                params![
                    key.deployment,
                    key.service,
                    i64::from(slot),
                    i64::from(tracker.failures),
                    tracker.started_ms,
                    tracker.not_before_ms
                ],
            )?;
            tx.commit()
        })
    }

    /// Containers whose exit was already counted.
    pub fn counted_exits(&self) -> Result<std::collections::HashSet<String>> {
        self.db.with(|c| {
            let mut st = c.prepare("SELECT id FROM replica_state WHERE exit_counted = 1")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Stores a replica's health status (written when it changes).
    pub fn put_health(&self, id: &str, status: HealthStatus) -> Result<()> {
        self.db.with(|c| {
            c.execute(
                "INSERT INTO replica_state (id, health) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET health = ?2",
                [id, status.as_str()],
            )
            .map(drop)
        })
    }

    /// The stored health of every replica that has one.
    pub fn healths(&self) -> Result<Vec<(String, HealthStatus)>> {
        self.db
            .with(|c| {
                let mut st =
                    c.prepare("SELECT id, health FROM replica_state WHERE health IS NOT NULL")?;
                let rows =
                    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                rows.collect()
            })
            .map(|v: Vec<(String, String)>| {
                v.into_iter()
                    .filter_map(|(id, h)| HealthStatus::parse(&h).map(|h| (id, h)))
                    .collect()
            })
    }

    /// Forgets the supervision facts of a removed container.
    pub fn forget_replica(&self, id: &str) -> Result<()> {
        self.db.with(|c| {
            c.execute("DELETE FROM replica_state WHERE id = ?1", [id])
                .map(drop)
        })
    }

    /// Forgets the facts of containers that no longer exist (removed while no daemon ran, or
    /// by `rm`); the `containers` table lives in the same database.
    pub fn prune_replicas(&self) -> Result<()> {
        self.db.with(|c| {
            c.execute(
                "DELETE FROM replica_state WHERE id NOT IN (SELECT id FROM containers)",
                [],
            )
            .map(drop)
        })
    }
}

/// Upserts a service's facts (also inside a transaction).
fn write_facts(
    c: &rusqlite::Connection,
    key: &ServiceKey,
    f: &ServiceFacts,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO service_status (deployment, service, restarts, failed_hash, job_hash,
                    job_attempts, job_state, job_exit_code, last_fire)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(deployment, service) DO UPDATE SET restarts = ?3, failed_hash = ?4,
                    job_hash = ?5, job_attempts = ?6, job_state = ?7, job_exit_code = ?8,
                    last_fire = ?9",
        params![
            key.deployment,
            key.service,
            f.restarts as i64,
            f.failed_hash,
            f.job_hash,
            i64::from(f.job_attempts),
            f.job_state,
            f.job_exit_code,
            f.last_fire
        ],
    )
    .map(drop)
}

impl ServiceStore {
    /// Reads, changes and writes a service's facts.
    pub fn update_facts(
        &self,
        key: &ServiceKey,
        change: impl FnOnce(&mut ServiceFacts),
    ) -> Result<ServiceFacts> {
        let mut f = self.facts(key)?;
        change(&mut f);
        self.put_facts(key, &f)?;
        Ok(f)
    }

    /// The next run number of a service.
    pub fn next_run(&self, key: &ServiceKey) -> Result<u32> {
        self.db.with(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(run), 0) + 1 FROM service_runs
                 WHERE deployment = ?1 AND service = ?2",
                [&key.deployment, &key.service],
                |r| r.get::<_, i64>(0).map(|v| v as u32),
            )
        })
    }

    pub fn put_run(&self, key: &ServiceKey, r: &RunRecord) -> Result<()> {
        self.db.with(|c| {
            c.execute(
                "INSERT INTO service_runs (deployment, service, run, container, spec_hash,
                    scheduled_at, finished_at, exit_code, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(deployment, service, run) DO UPDATE SET container = ?4,
                    finished_at = ?7, exit_code = ?8, state = ?9",
                params![
                    key.deployment,
                    key.service,
                    i64::from(r.run),
                    r.container,
                    r.spec_hash,
                    r.scheduled_at,
                    r.finished_at,
                    r.exit_code,
                    r.state
                ],
            )
            .map(drop)
        })
    }

    /// Runs of a service, newest first.
    pub fn runs(&self, key: &ServiceKey) -> Result<Vec<RunRecord>> {
        self.db.with(|c| {
            let mut st = c.prepare(
                "SELECT run, container, spec_hash, scheduled_at, finished_at, exit_code, state
                 FROM service_runs WHERE deployment = ?1 AND service = ?2 ORDER BY run DESC",
            )?;
            let rows = st.query_map([&key.deployment, &key.service], |r| {
                Ok(RunRecord {
                    run: r.get::<_, i64>(0)? as u32,
                    container: r.get(1)?,
                    spec_hash: r.get(2)?,
                    scheduled_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    exit_code: r.get(5)?,
                    state: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn delete_run(&self, key: &ServiceKey, run: u32) -> Result<()> {
        self.db.with(|c| {
            c.execute(
                "DELETE FROM service_runs WHERE deployment = ?1 AND service = ?2 AND run = ?3",
                params![key.deployment, key.service, i64::from(run)],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Deployment {
        zlayer_spec::parse_str(
            "version: v1\ndeployment: demo\nservices:\n  web:\n    image: busybox\n    network: host\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn deployments_facts_and_runs_survive_reopen() {
        let web = ServiceKey::new("demo", "web");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        {
            let s = ServiceStore::open(Arc::new(Db::open(&path).unwrap())).unwrap();
            let rec = DeploymentRecord {
                spec: spec(),
                source: "src".into(),
                file: "demo.yaml".into(),
                env: BTreeMap::from([("web".into(), BTreeMap::from([("A".into(), "1".into())]))]),
                deployed_at: "2026-01-01T00:00:00Z".into(),
            };
            s.put_deployment(&rec).unwrap();
            s.put_deployment(&rec).unwrap();
            s.update_facts(&web, |f| f.restarts += 2).unwrap();
            assert_eq!(s.next_run(&web).unwrap(), 1);
            let run = RunRecord {
                run: 1,
                container: "c1".into(),
                spec_hash: "h".into(),
                scheduled_at: "t".into(),
                finished_at: None,
                exit_code: None,
                state: RunState::Running,
            };
            s.put_run(&web, &run).unwrap();
            s.put_run(
                &web,
                &RunRecord {
                    exit_code: Some(3),
                    state: RunState::Failed,
                    ..run
                },
            )
            .unwrap();
        }
        let s = ServiceStore::open(Arc::new(Db::open(&path).unwrap())).unwrap();
        let all = s.list_deployments().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].spec, spec());
        assert_eq!(all[0].env["web"]["A"], "1");
        assert_eq!(s.facts(&web).unwrap().restarts, 2);
        let runs = s.runs(&web).unwrap();
        assert_eq!(
            (runs[0].exit_code, runs[0].state),
            (Some(3), RunState::Failed)
        );
        assert_eq!(s.next_run(&web).unwrap(), 2);
        assert!(s.delete_deployment("demo").unwrap());
        assert!(s.get_deployment("demo").unwrap().is_none());
        assert_eq!(s.facts(&web).unwrap(), ServiceFacts::default());
        assert!(s.runs(&web).unwrap().is_empty());
    }

    #[test]
    fn state_texts_written_by_earlier_builds_read_back_as_enums() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("agent.db")).unwrap());
        let s = ServiceStore::open(Arc::clone(&db)).unwrap();
        // Rows as a build that kept states as strings wrote them.
        db.with(|c| {
            c.execute_batch(
                "INSERT INTO service_status (deployment, service, restarts, job_attempts, job_state)
                    VALUES ('demo', 'migrate', 0, 2, 'retrying');
                 INSERT INTO service_runs (deployment, service, run, container, spec_hash,
                    scheduled_at, state)
                    VALUES ('demo', 'tick', 1, 'c1', 'h', 't', 'skipped'),
                           ('demo', 'tick', 2, 'c2', 'h', 't', 'lost');",
            )
        })
        .unwrap();
        let f = s.facts(&ServiceKey::new("demo", "migrate")).unwrap();
        assert_eq!((f.job_attempts, f.job_state), (2, Some(JobState::Retrying)));
        let states: Vec<RunState> = s
            .runs(&ServiceKey::new("demo", "tick"))
            .unwrap()
            .iter()
            .map(|r| r.state)
            .collect();
        assert_eq!(states, [RunState::Lost, RunState::Skipped]);
        // And the enums are written back as the same text.
        s.put_facts(&ServiceKey::new("demo", "migrate"), &f)
            .unwrap();
        let text: String = db
            .with(|c| {
                c.query_row(
                    "SELECT job_state FROM service_status WHERE service = 'migrate'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(text, "retrying");
    }
}

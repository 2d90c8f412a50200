//! The pass of a `kind: cron`: record the runs that finished, fire when the schedule is due
//! (honouring `concurrency`), keep the last `history` runs.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use zlayer_spec::{Concurrency, Service};

use crate::containers::ContainerState;
use crate::error::Result;
use crate::services::key::ServiceKey;
use crate::services::labels::Owner;
use crate::services::request::replica_hash;
use crate::services::state::{OwnerKind, RunState, ViewState};
use crate::services::store::RunRecord;
use crate::services::supervisor::STOP_GRACE_SECS;
use crate::services::task::{started_age, PassInput, TaskState};
use crate::Agent;

impl Agent {
    pub(crate) async fn pass_cron(
        self: &Arc<Self>,
        input: PassInput<'_>,
        st: &mut TaskState,
    ) -> Result<()> {
        let PassInput { key, svc, .. } = input;
        let Some(schedule) = &svc.schedule else {
            return Ok(());
        };
        let store = &self.services.store;
        let mut facts = store.facts(key)?;
        let now = Utc::now();
        let last = facts
            .last_fire
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let last = match last {
            Some(t) => t,
            None => {
                facts.last_fire = Some(now.to_rfc3339());
                store.put_facts(key, &facts)?;
                now
            }
        };
        let active = self.reap_cron_runs(key, svc).await?;
        let next = schedule.next_after(last);
        if let Some(due) = next.filter(|t| *t <= now && !st.cancel.is_cancelled()) {
            // Missed fires while the daemon was down collapse into one run.
            facts.last_fire = Some(now.to_rfc3339());
            store.put_facts(key, &facts)?;
            if !self.fire_cron(input, due, &active).await? {
                return Ok(());
            }
        }
        self.prune_cron_history(key, svc).await?;
        let next = schedule
            .next_after(now.max(last))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let state = if active.is_empty() {
            ViewState::Scheduled
        } else {
            ViewState::Running
        };
        self.services
            .set_view(key, state, format!("next run {next}"));
        Ok(())
    }

    /// Records the exit codes of runs that finished, stops overdue ones, marks runs whose
    /// container is gone as lost; returns the containers of the runs still running.
    async fn reap_cron_runs(&self, key: &ServiceKey, svc: &Service) -> Result<Vec<String>> {
        let store = &self.services.store;
        let owned = self.owned(key, OwnerKind::Cron)?;
        let mut runs = store.runs(key)?;
        let mut active = Vec::new();
        for run in runs.iter_mut().filter(|r| r.state == RunState::Running) {
            match owned.iter().find(|(r, _)| r.id == run.container) {
                Some((r, _)) if r.state == ContainerState::Running => {
                    if let Some(t) = svc.timeout {
                        if started_age(r) > t.get() {
                            let _ = self.stop_container(&r.id, Some(STOP_GRACE_SECS)).await;
                        }
                    }
                    active.push(r.id.clone());
                }
                Some((r, _)) => {
                    let code = r.exit_code.unwrap_or(-1);
                    run.exit_code = Some(code);
                    run.finished_at = r.finished_at.clone();
                    run.state = RunState::of_exit(code);
                    store.put_run(key, run)?;
                    self.services.events.publish(
                        self.event("cron_finished", key)
                            .with("run", run.run)
                            .with("exit_code", code),
                    );
                }
                None => {
                    run.state = RunState::Lost;
                    store.put_run(key, run)?;
                }
            }
        }
        Ok(active)
    }

    /// One fire of the schedule, due at `due`: a new run, skipped or replacing the `active`
    /// ones as `concurrency` says. `Ok(false)` when its container could not start (the
    /// view then shows the error).
    async fn fire_cron(
        self: &Arc<Self>,
        input: PassInput<'_>,
        due: DateTime<Utc>,
        active: &[String],
    ) -> Result<bool> {
        let PassInput { key, svc, env, rec } = input;
        let store = &self.services.store;
        let concurrency = svc.concurrency.unwrap_or_default();
        let run_no = store.next_run(key)?;
        let mut record = RunRecord {
            run: run_no,
            container: String::new(),
            spec_hash: replica_hash(svc, env),
            scheduled_at: due.to_rfc3339(),
            finished_at: None,
            exit_code: None,
            state: RunState::Running,
        };
        if !active.is_empty() && concurrency == Concurrency::Forbid {
            record.state = RunState::Skipped;
            store.put_run(key, &record)?;
            self.services
                .events
                .publish(self.event("cron_skipped", key).with("run", run_no));
            return Ok(true);
        }
        if self.dependencies_met(key, svc, rec).is_err() {
            return Ok(true);
        }
        if concurrency == Concurrency::Replace && !active.is_empty() {
            self.remove_replicas(active.to_vec()).await;
        }
        let owner = Owner {
            deployment: key.deployment.clone(),
            service: key.service.clone(),
            replica: run_no,
            spec_hash: record.spec_hash.clone(),
            kind: OwnerKind::Cron,
        };
        match self.start_one(key, svc, env, owner).await {
            Ok(id) => {
                record.container = id;
                store.put_run(key, &record)?;
                self.services
                    .events
                    .publish(self.event("cron_fired", key).with("run", run_no));
                Ok(true)
            }
            Err(e) => {
                record.state = RunState::Failed;
                store.put_run(key, &record)?;
                self.services.set_view(key, ViewState::Error, e.to_string());
                Ok(false)
            }
        }
    }

    /// Keeps the last `history` finished runs (and their containers, for logs).
    async fn prune_cron_history(self: &Arc<Self>, key: &ServiceKey, svc: &Service) -> Result<()> {
        let store = &self.services.store;
        let keep = svc.history.unwrap_or(zlayer_spec::defaults::CRON_HISTORY) as usize;
        let runs = store.runs(key)?;
        let mut drop_ids = Vec::new();
        for r in runs
            .iter()
            .filter(|r| r.state != RunState::Running)
            .skip(keep)
        {
            store.delete_run(key, r.run)?;
            if !r.container.is_empty() {
                drop_ids.push(r.container.clone());
            }
        }
        if !drop_ids.is_empty() {
            self.remove_replicas(drop_ids).await;
        }
        Ok(())
    }
}

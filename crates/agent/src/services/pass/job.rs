//! The pass of a `kind: job`: run it until one attempt exits 0, retrying failed attempts after
//! the backoff (the rules are in `job_rules.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use zlayer_spec::Service;

use crate::containers::{ContainerRecord, ContainerState};
use crate::error::Result;
use crate::services::job_rules::{after_failure, job_step, Attempt, JobProgress, JobStep};
use crate::services::key::ServiceKey;
use crate::services::labels::Owner;
use crate::services::request::replica_hash;
use crate::services::state::{JobState, OwnerKind, RunState, ViewState};
use crate::services::store::{DeploymentRecord, RunRecord, ServiceFacts};
use crate::services::supervisor::STOP_GRACE_SECS;
use crate::services::task::{started_age, PassInput, TaskState};
use crate::Agent;

/// What one job pass works on.
struct JobPass<'a> {
    key: &'a ServiceKey,
    svc: &'a Service,
    env: &'a BTreeMap<String, String>,
    hash: String,
    facts: ServiceFacts,
}

impl Agent {
    pub(crate) async fn pass_job(
        self: &Arc<Self>,
        input: PassInput<'_>,
        st: &mut TaskState,
    ) -> Result<()> {
        let PassInput { key, svc, env, rec } = input;
        let hash = replica_hash(svc, env);
        let store = &self.services.store;
        let mut facts = store.facts(key)?;
        if facts.job_hash.as_deref() != Some(hash.as_str()) {
            // A new version of the job starts over.
            facts.job_hash = Some(hash.clone());
            facts.job_attempts = 0;
            facts.job_state = None;
            facts.job_exit_code = None;
            store.put_facts(key, &facts)?;
        }
        let owned = self.owned(key, OwnerKind::Job)?;
        // Containers of an earlier version of the job go.
        let stale: Vec<String> = owned
            .iter()
            .filter(|(_, o)| o.spec_hash != hash)
            .map(|(r, _)| r.id.clone())
            .collect();
        if !stale.is_empty() {
            self.remove_replicas(stale).await;
        }
        let mine: Vec<&ContainerRecord> = owned
            .iter()
            .filter(|(_, o)| o.spec_hash == hash)
            .map(|(r, _)| r)
            .collect();
        let attempt = facts.job_attempts;
        let latest = owned
            .iter()
            .find(|(_, o)| o.spec_hash == hash && o.replica == attempt)
            .map(|(r, _)| r);
        let progress = JobProgress {
            state: facts.job_state,
            attempts: attempt,
            retries: svc.retries.unwrap_or(0),
        };
        let mut pass = JobPass {
            key,
            svc,
            env,
            hash,
            facts,
        };
        match job_step(progress, attempt_of(latest)) {
            JobStep::Completed => {
                let msg = format!("exit code 0 after {attempt} attempt(s)");
                self.services.set_view(key, ViewState::Completed, msg);
            }
            JobStep::Failed => {
                let code = pass.facts.job_exit_code.unwrap_or(-1);
                let msg = format!("exit code {code} after {attempt} attempt(s)");
                self.services.set_view(key, ViewState::Failed, msg);
            }
            JobStep::Running => {
                if let Some(r) = latest {
                    self.stop_if_overdue(&pass, r).await;
                }
                let msg = format!("attempt {attempt}");
                self.services.set_view(key, ViewState::Running, msg);
            }
            JobStep::Finished { code, then } => {
                if let Some(r) = latest {
                    self.job_attempt_finished(&mut pass, r, code, then, st)?;
                }
            }
            JobStep::Start { attempt: next } => {
                let old = mine.iter().map(|r| r.id.clone()).collect();
                self.start_job_attempt(&mut pass, rec, next, old, progress.retries, st)
                    .await?;
            }
        }
        Ok(())
    }

    /// Stops a job's running attempt that has run longer than its `timeout`.
    async fn stop_if_overdue(&self, pass: &JobPass<'_>, r: &ContainerRecord) {
        if let Some(t) = pass.svc.timeout {
            if started_age(r) > t.get() {
                tracing::warn!(deployment = %pass.key.deployment, service = %pass.key.service, "job exceeded its timeout of {}s", t.get().as_secs());
                let _ = self.stop_container(&r.id, Some(STOP_GRACE_SECS)).await;
            }
        }
    }

    /// Records the exit of the current attempt and moves the job to `then`.
    fn job_attempt_finished(
        &self,
        pass: &mut JobPass<'_>,
        r: &ContainerRecord,
        code: i64,
        then: JobState,
        st: &mut TaskState,
    ) -> Result<()> {
        let (key, store) = (pass.key, &self.services.store);
        let attempt = pass.facts.job_attempts;
        pass.facts.job_exit_code = Some(code);
        store.put_run(
            key,
            &RunRecord {
                run: attempt,
                container: r.id.clone(),
                spec_hash: pass.hash.clone(),
                scheduled_at: r.created_at.clone(),
                finished_at: r.finished_at.clone(),
                exit_code: Some(code),
                state: RunState::of_exit(code),
            },
        )?;
        self.services.events.publish(
            self.event("job_finished", key)
                .with("attempt", attempt)
                .with("exit_code", code),
        );
        pass.facts.job_state = Some(then);
        if then == JobState::Retrying {
            let b = pass.svc.backoff.clone().unwrap_or_default();
            st.tracker(0).ended(Instant::now(), &b);
        }
        store.put_facts(key, &pass.facts)?;
        self.services.wake();
        Ok(())
    }

    /// Starts attempt `next` once the backoff and the gates allow, replacing the containers
    /// of earlier attempts (`old`; only the latest attempt's container is kept, for its logs).
    async fn start_job_attempt(
        self: &Arc<Self>,
        pass: &mut JobPass<'_>,
        rec: &DeploymentRecord,
        next: u32,
        old: Vec<String>,
        retries: u32,
        st: &mut TaskState,
    ) -> Result<()> {
        let key = pass.key;
        if let Some(t) = st.trackers.get(&0).filter(|t| !t.ready(Instant::now())) {
            let msg = format!("retrying in {}s", t.remaining(Instant::now()).as_secs());
            self.services.set_view(key, ViewState::Waiting, msg);
            return Ok(());
        }
        let input = PassInput {
            key,
            svc: pass.svc,
            env: pass.env,
            rec,
        };
        if !self.ready_to_start(input, &pass.hash, st).await? {
            return Ok(());
        }
        if st.cancel.is_cancelled() {
            return Ok(());
        }
        if !old.is_empty() {
            self.remove_replicas(old).await;
        }
        let store = &self.services.store;
        pass.facts.job_attempts = next;
        pass.facts.job_state = Some(JobState::Running);
        store.put_facts(key, &pass.facts)?;
        let owner = Owner {
            deployment: key.deployment.clone(),
            service: key.service.clone(),
            replica: next,
            spec_hash: pass.hash.clone(),
            kind: OwnerKind::Job,
        };
        match self.start_one(key, pass.svc, pass.env, owner).await {
            Ok(id) => {
                store.put_run(
                    key,
                    &RunRecord {
                        run: next,
                        container: id,
                        spec_hash: pass.hash.clone(),
                        scheduled_at: chrono::Utc::now().to_rfc3339(),
                        finished_at: None,
                        exit_code: None,
                        state: RunState::Running,
                    },
                )?;
                let msg = format!("attempt {next}");
                self.services.set_view(key, ViewState::Running, msg);
            }
            Err(e) => {
                pass.facts.job_state = Some(after_failure(next, retries));
                store.put_facts(key, &pass.facts)?;
                let b = pass.svc.backoff.clone().unwrap_or_default();
                st.tracker(0).ended(Instant::now(), &b);
                self.services.set_view(key, ViewState::Error, e.to_string());
            }
        }
        Ok(())
    }
}

/// The latest attempt's container as the job rules see it.
fn attempt_of(latest: Option<&ContainerRecord>) -> Attempt {
    match latest {
        None => Attempt::Missing,
        Some(r) if r.state == ContainerState::Running => Attempt::Running,
        Some(r) if r.state == ContainerState::Exited => Attempt::Exited {
            code: r.exit_code.unwrap_or(-1),
        },
        Some(_) => Attempt::Other,
    }
}

//! The pass of a `kind: service`: observe the replicas (health, exits), ask `converge` what
//! to do, apply it (removals, gated starts), then keep DNS, published ports, events and the
//! view up to date.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use zlayer_spec::{Restart, Service};

use crate::containers::{ContainerRecord, ContainerState};
use crate::error::Result;
use crate::services::converge::{converge, Desired, Observed, Pass, Reason, Step};
use crate::services::events::Event;
use crate::services::health::HealthStatus;
use crate::services::key::ServiceKey;
use crate::services::labels::Owner;
use crate::services::request::replica_hash;
use crate::services::state::{OwnerKind, ViewState};
use crate::services::store::ServiceFacts;
use crate::services::supervisor::START_PARALLELISM;
use crate::services::task::{started_age, PassInput, TaskState};
use crate::Agent;

/// The replicas of a service as one pass sees them.
struct Observation {
    owned: Vec<(ContainerRecord, Owner)>,
    seen: Vec<Observed>,
    running: usize,
    healthy: usize,
}

/// What one service pass works on.
struct ServicePass<'a> {
    key: &'a ServiceKey,
    svc: &'a Service,
    env: &'a BTreeMap<String, String>,
    hash: String,
    restart: Restart,
    now: Instant,
    facts: ServiceFacts,
}

impl Agent {
    pub(crate) async fn pass_service(
        self: &Arc<Self>,
        input: PassInput<'_>,
        st: &mut TaskState,
    ) -> Result<()> {
        let PassInput { key, svc, env, .. } = input;
        self.sync_published(key, svc, st);
        let mut p = ServicePass {
            key,
            svc,
            env,
            hash: replica_hash(svc, env),
            restart: svc.effective_restart(),
            now: Instant::now(),
            facts: self.services.store.facts(key)?,
        };
        let obs = self.observe_replicas(&mut p, st)?;
        let update = svc.update.clone().unwrap_or_default();
        // `deploy` and `scale` refuse more, but a deployment stored before (by an older
        // build, or under a higher limit) may ask for more: run no more than the limit.
        let max_replicas = self.config().file.limits.max_replicas;
        let capped = svc
            .desired_replicas()
            .min(u32::try_from(max_replicas).unwrap_or(u32::MAX));
        let want = Desired {
            replicas: capped,
            hash: p.hash.clone(),
            policy: p.restart.policy,
            order: update.order,
            health_timeout: update.health_timeout.get(),
            rollout_blocked: p.facts.failed_hash.as_deref() == Some(p.hash.as_str()),
        };
        let pass = converge(&want, &obs.seen, |slot| {
            st.trackers.get(&slot).is_none_or(|t| t.ready(p.now))
        });

        // Dependencies and init steps gate starts while nothing of this version runs yet.
        let current_running = obs.seen.iter().any(|o| o.running && o.hash == p.hash);
        let has_starts = pass.steps.iter().any(|s| matches!(s, Step::Start { .. }));
        let may_start =
            !has_starts || current_running || self.ready_to_start(input, &p.hash, st).await?;
        self.apply_steps(&mut p, &pass, &obs.owned, may_start, st)
            .await?;
        let crash = self.report_service(&p, &pass, &want, st);
        let view = if capped < svc.desired_replicas() {
            Some((
                ViewState::Error,
                format!(
                    "asks for {} replicas, over this node's limit of {max_replicas} ({}): running {capped}",
                    svc.desired_replicas(),
                    crate::limits::MAX_REPLICAS_KEY
                ),
            ))
        } else {
            service_view(&p, &pass, &want, &obs, crash, may_start, st)
        };
        if let Some((state, message)) = view {
            self.services.set_view(key, state, message);
        } else {
            return Ok(()); // ready_to_start has set the view
        }
        forget_gone(&obs.owned, st);
        Ok(())
    }

    /// Looks at every container of the service: starts health probes of running ones, counts
    /// each exit of a current replica once (restart count, backoff, events).
    fn observe_replicas(
        self: &Arc<Self>,
        p: &mut ServicePass<'_>,
        st: &mut TaskState,
    ) -> Result<Observation> {
        let owned = self.owned(p.key, OwnerKind::Service)?;
        let mut seen = Vec::new();
        let (mut running, mut healthy) = (0, 0);
        for (r, o) in &owned {
            let is_running = r.state == ContainerState::Running;
            let health = match (&p.svc.health, is_running) {
                (Some(cfg), true) => {
                    self.ensure_probe(st, p.key, r, cfg);
                    Some(
                        self.services
                            .health_of(&r.id)
                            .unwrap_or(HealthStatus::Starting),
                    )
                }
                (Some(_), false) => self.services.health_of(&r.id),
                (None, _) => None,
            };
            if is_running {
                running += 1;
                if matches!(health, None | Some(HealthStatus::Healthy)) {
                    healthy += 1;
                }
            }
            // A replica of the current version that ended: count it once (restart + backoff).
            if !is_running && o.spec_hash == p.hash && st.counted_exits.insert(r.id.clone()) {
                self.count_exit(p, r, o.replica, st)?;
            }
            seen.push(Observed {
                id: r.id.clone(),
                slot: o.replica,
                hash: o.spec_hash.clone(),
                running: is_running,
                exit_code: r.exit_code,
                oom_killed: r.oom_killed,
                health,
                age: started_age(r),
            });
        }
        Ok(Observation {
            owned,
            seen,
            running,
            healthy,
        })
    }

    /// Counts the exit of replica `slot` (container `r`): its backoff, the restart count when
    /// the policy restarts it, `died`/`oom` events; stored in one transaction.
    fn count_exit(
        &self,
        p: &mut ServicePass<'_>,
        r: &ContainerRecord,
        slot: u32,
        st: &mut TaskState,
    ) -> Result<()> {
        let key = p.key;
        let tracker = st.tracker(slot);
        let delay = tracker.ended(p.now, &p.restart.backoff);
        let saved = tracker.save(p.now, crate::services::backoff::wall_ms());
        let mut ev = Event::new("container", "died", &r.id, &r.name)
            .with("deployment", &key.deployment)
            .with("service", &key.service)
            .with("exit_code", r.exit_code.unwrap_or(-1));
        if let Some(e) = &r.error {
            ev = ev.with("error", e);
        }
        self.services.events.publish(ev);
        if r.oom_killed {
            self.services.events.publish(
                Event::new("container", "oom", &r.id, &r.name).with("service", &key.service),
            );
        }
        let restarting =
            crate::services::backoff::should_restart(p.restart.policy, r.exit_code, r.oom_killed);
        if restarting {
            p.facts.restarts += 1;
            self.services.metrics.restart();
            tracing::info!(deployment = %key.deployment, service = %key.service, replica = slot, "replica exited; restart in {delay:?}");
        }
        self.services
            .store
            .count_exit(key, &p.facts, &r.id, slot, saved)
    }

    /// Applies converge's steps: replicas to remove leave DNS and the published ports first,
    /// then go; starts happen when `may_start`.
    async fn apply_steps(
        self: &Arc<Self>,
        p: &mut ServicePass<'_>,
        pass: &Pass,
        owned: &[(ContainerRecord, Owner)],
        may_start: bool,
        st: &mut TaskState,
    ) -> Result<()> {
        let key = p.key;
        let mut removals = Vec::new();
        let mut starts = Vec::new();
        for step in &pass.steps {
            match step {
                Step::Remove { id, slot, reason } => {
                    if *reason == Reason::Unhealthy {
                        st.tracker(*slot).ended(p.now, &p.restart.backoff);
                        p.facts.restarts += 1;
                        self.services.metrics.restart();
                        self.services.store.put_facts(key, &p.facts)?;
                        self.services
                            .events
                            .publish(self.event("replaced_unhealthy", key).with("container", id));
                    }
                    tracing::info!(deployment = %key.deployment, service = %key.service, slot, "removing {id}: {}", reason.as_str());
                    removals.push(id.clone());
                }
                Step::RolloutFailed { id, slot, why } => {
                    p.facts.failed_hash = Some(p.hash.clone());
                    self.services.store.put_facts(key, &p.facts)?;
                    self.services.events.publish(
                        self.event("rollout_failed", key)
                            .with("replica", slot)
                            .with("error", why),
                    );
                    tracing::warn!(deployment = %key.deployment, service = %key.service, "rollout failed: {why}");
                    removals.push(id.clone());
                }
                Step::Start { slot } if may_start => starts.push(*slot),
                Step::Start { .. } => {}
            }
        }
        // Replicas about to go leave DNS and the published ports before they stop.
        let leaving: HashSet<String> = removals.iter().cloned().collect();
        self.sync_endpoints(key, p.svc, owned, &leaving, st);
        if !removals.is_empty() {
            self.remove_replicas(removals).await;
        }
        if !starts.is_empty() {
            self.start_slots(key, p.svc, p.env, &p.hash, &starts, st)
                .await;
            // Replicas without a health check serve as soon as they run.
            let owned = self.owned(key, OwnerKind::Service)?;
            self.sync_endpoints(key, p.svc, &owned, &HashSet::new(), st);
        }
        Ok(())
    }

    /// The service-level events of a pass (`scaled`, `rolled`, `crash_loop`); returns whether
    /// the service is crash-looping.
    fn report_service(
        &self,
        p: &ServicePass<'_>,
        pass: &Pass,
        want: &Desired,
        st: &mut TaskState,
    ) -> bool {
        let key = p.key;
        if st.last_replicas != Some(want.replicas) {
            if st.last_replicas.is_some() {
                self.services
                    .events
                    .publish(self.event("scaled", key).with("replicas", want.replicas));
            }
            st.last_replicas = Some(want.replicas);
        }
        if st.was_rolling && !pass.rolling && !want.rollout_blocked {
            self.services
                .events
                .publish(self.event("rolled", key).with("spec_hash", &p.hash));
        }
        st.was_rolling = pass.rolling;
        let crash = pass
            .backing_off
            .iter()
            .any(|s| st.trackers.get(s).is_some_and(|t| t.crash_looping()));
        if crash && !st.crash_reported {
            self.services.events.publish(self.event("crash_loop", key));
        }
        st.crash_reported = crash;
        crash
    }

    /// Starts replicas in `slots`, [`START_PARALLELISM`] at a time; each start feeds its
    /// slot's backoff.
    async fn start_slots(
        self: &Arc<Self>,
        key: &ServiceKey,
        svc: &Service,
        env: &BTreeMap<String, String>,
        hash: &str,
        slots: &[u32],
        st: &mut TaskState,
    ) {
        // One copy of the spec for all starts, and a task only when one of the
        // START_PARALLELISM is free: a task per desired replica, each with its own copy of the
        // service, up front, was what took a daemon asked for 100000 replicas to 1.1 GB.
        let svc = Arc::new(svc.clone());
        let env = Arc::new(env.clone());
        let mut set = tokio::task::JoinSet::new();
        let mut pending = slots.iter().copied();
        loop {
            while set.len() < START_PARALLELISM && !st.cancel.is_cancelled() {
                let Some(slot) = pending.next() else { break };
                let owner = Owner {
                    deployment: key.deployment.clone(),
                    service: key.service.clone(),
                    replica: slot,
                    spec_hash: hash.to_string(),
                    kind: OwnerKind::Service,
                };
                let (agent, key, svc, env) = (
                    Arc::clone(self),
                    key.clone(),
                    Arc::clone(&svc),
                    Arc::clone(&env),
                );
                set.spawn(async move { (slot, agent.start_one(&key, &svc, &env, owner).await) });
            }
            let Some(res) = set.join_next().await else {
                break;
            };
            let Ok((slot, res)) = res else { continue };
            let tracker = st.tracker(slot);
            match res {
                Ok(_) => tracker.started(Instant::now()),
                Err(e) => {
                    let delay = tracker.ended(Instant::now(), &svc.effective_restart().backoff);
                    tracing::warn!(deployment = %key.deployment, service = %key.service, slot, "starting replica failed (retry in {delay:?}): {e}");
                    self.services.events.publish(
                        self.event("start_failed", key)
                            .with("replica", slot)
                            .with("error", &e),
                    );
                    self.services.set_view(key, ViewState::Error, e.to_string());
                }
            }
        }
    }
}

/// What `services` shows after a pass (the replica limit aside); `None` when the gates hold
/// the starts back (`ready_to_start` has set the view).
fn service_view(
    p: &ServicePass<'_>,
    pass: &Pass,
    want: &Desired,
    obs: &Observation,
    crash: bool,
    may_start: bool,
    st: &TaskState,
) -> Option<(ViewState, String)> {
    Some(if let Some(e) = &st.publish_error {
        (ViewState::Error, e.clone())
    } else if want.rollout_blocked {
        (
            ViewState::RolloutFailed,
            "the new version failed; the previous replicas keep serving (deploy again to retry)"
                .to_string(),
        )
    } else if crash {
        let wait = pass
            .backing_off
            .iter()
            .filter_map(|s| st.trackers.get(s))
            .map(|t| t.remaining(p.now))
            .max()
            .unwrap_or_default();
        (
            ViewState::CrashLoop,
            format!("restarting in {}s", wait.as_secs()),
        )
    } else if pass.rolling {
        (ViewState::Rolling, String::new())
    } else if !may_start {
        return None;
    } else if obs.running >= want.replicas as usize && obs.healthy >= want.replicas as usize {
        (ViewState::Running, String::new())
    } else {
        (ViewState::Starting, String::new())
    })
}

/// Forgets probes and exit bookkeeping of containers that are gone.
fn forget_gone(owned: &[(ContainerRecord, Owner)], st: &mut TaskState) {
    let ids: HashSet<&str> = owned.iter().map(|(r, _)| r.id.as_str()).collect();
    st.probes.retain(|id, h| {
        let keep = ids.contains(id.as_str());
        if !keep {
            h.abort();
        }
        keep
    });
    st.counted_exits.retain(|id| ids.contains(id.as_str()));
}

//! The supervisor: one task per declared service that observes its containers (by label) and
//! converges them on the desired state, plus a manager task that starts and ends those tasks
//! as deployments come and go and removes containers whose deployment is gone.
//!
//! Every pass starts from the container records, so a daemon restart simply starts the tasks
//! again: running replicas are adopted (not restarted) and half-done work is finished.
//!
//! This file keeps the manager loop, the [`Services`] state and the `services` listing; one
//! service task is in `task.rs`, its passes in `pass/` (one file per kind).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use zlayer_spec::Kind;

use super::cancel::Cancel;
use super::events::EventBus;
use super::health::HealthStatus;
use super::key::ServiceKey;
use super::labels::Owner;
use super::metrics::Metrics;
use super::state::{OwnerKind, ViewState};
use super::store::{DeploymentRecord, ServiceStore};
use crate::containers::{ContainerRecord, ContainerState};
use crate::db::Db;
use crate::error::Result;
use crate::Agent;

/// How often a service task looks again when nothing wakes it.
pub(crate) const PASS_INTERVAL: Duration = Duration::from_millis(500);
/// Grace period when the supervisor stops a replica.
pub(crate) const STOP_GRACE_SECS: u64 = 5;
/// How many containers a pass starts at once.
pub(crate) const START_PARALLELISM: usize = 8;
/// How many replicas are stopped and removed at once (undeploy, scale-down, a rollout): each
/// mostly waits (for its process to exit, for a CNI DEL), so many at once cost little, and
/// 100 replicas go in about the time of one.
const REMOVE_PARALLELISM: usize = 64;

/// Runs `work` for each id, at most `limit` at once. A task is spawned only when one is free,
/// so what is held follows what runs, not how many ids there are.
async fn for_each_bounded<F, Fut>(ids: &[String], limit: usize, work: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        if set.len() >= limit {
            set.join_next().await;
        }
        set.spawn(work(id.clone()));
    }
    while set.join_next().await.is_some() {}
}

/// What `services` shows about a service besides counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub state: ViewState,
    pub message: String,
}

/// The services part of the agent: desired state, events, health results and the supervisor's
/// bookkeeping. Lives inside [`Agent`].
pub struct Services {
    pub(crate) store: ServiceStore,
    pub events: EventBus,
    pub metrics: Metrics,
    pub(crate) health: Mutex<HashMap<String, HealthStatus>>,
    pub(crate) views: Mutex<HashMap<ServiceKey, View>>,
    /// Published ports of services (forwarded to their healthy replicas).
    pub(crate) published: super::publish::Publisher,
    pub(crate) wake: Notify,
    started: std::sync::atomic::AtomicBool,
    /// The running service tasks, shared by the manager (which starts them) and `undeploy`
    /// (which cancels and awaits them before removing containers).
    tasks: Mutex<HashMap<ServiceKey, ServiceTask>>,
}

/// A running service task and the way to stop it.
struct ServiceTask {
    cancel: Arc<Cancel>,
    handle: tokio::task::JoinHandle<()>,
}

impl Services {
    /// Opens the services tables in `agent.db`, with the health results stored by the
    /// previous daemon (adopted replicas keep them until their next check says otherwise).
    pub fn open(db: Arc<Db>) -> Result<Self> {
        let store = ServiceStore::open(db)?;
        store.prune_replicas()?;
        let health = store.healths()?.into_iter().collect();
        Ok(Self {
            store,
            events: EventBus::new(),
            metrics: Metrics::default(),
            health: Mutex::new(health),
            views: Mutex::new(HashMap::new()),
            published: super::publish::Publisher::default(),
            wake: Notify::new(),
            started: std::sync::atomic::AtomicBool::new(false),
            tasks: Mutex::new(HashMap::new()),
        })
    }

    /// Makes every service task look again now.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// The health of a container started by the supervisor, if it has a check.
    pub fn health_of(&self, id: &str) -> Option<HealthStatus> {
        self.health.lock().get(id).copied()
    }

    /// Cancels the service tasks of `deployment` and waits until they have ended, so no pass
    /// of it is left that could still start a container (a cron fire, a job retry, a restart).
    /// The deployment must already be gone from the store, so the manager starts none again
    /// (a task it starts from an older listing ends at its first look at the store).
    pub(crate) async fn stop_tasks(&self, deployment: &str) {
        let stopped: Vec<ServiceTask> = {
            let mut tasks = self.tasks.lock();
            let keys: Vec<ServiceKey> = tasks
                .keys()
                .filter(|k| k.deployment == deployment)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| tasks.remove(k)).collect()
        };
        for t in &stopped {
            t.cancel.cancel();
        }
        for t in stopped {
            if let Err(e) = t.handle.await {
                if e.is_panic() {
                    tracing::error!(deployment, "service task panicked: {e}");
                }
            }
        }
    }

    /// Sets what `services` shows about `key` until the next pass says otherwise.
    pub(crate) fn set_view(&self, key: &ServiceKey, state: ViewState, message: String) {
        self.views
            .lock()
            .insert(key.clone(), View { state, message });
    }
}

impl Agent {
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Starts the supervisor (once): call after [`Agent::recover`] inside the runtime.
    pub fn start_supervisor(self: &Arc<Self>) {
        if self
            .services
            .started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let agent = Arc::clone(self);
        tokio::spawn(async move { agent.manager_loop().await });
    }

    async fn manager_loop(self: Arc<Self>) {
        loop {
            let notified = self.services.wake.notified();
            match self.services.store.list_deployments() {
                Ok(deps) => {
                    let mut wanted = HashSet::new();
                    for d in &deps {
                        for name in d.spec.services.keys() {
                            wanted.insert(ServiceKey::new(&d.spec.deployment, name));
                        }
                    }
                    {
                        // Spawned and registered under one lock, so `stop_tasks` sees every
                        // task that may have read the deployment before it was deleted.
                        let mut tasks = self.services.tasks.lock();
                        tasks.retain(|k, t| {
                            if !wanted.contains(k) || t.handle.is_finished() {
                                // Not aborted: it finishes its pass and ends (see cancel.rs).
                                t.cancel.cancel();
                                if !wanted.contains(k) {
                                    // The service is gone: its name and published ports with it.
                                    self.drop_endpoints(k);
                                }
                                return false;
                            }
                            true
                        });
                        for k in wanted {
                            if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(k)
                            {
                                let agent = Arc::clone(&self);
                                let key = slot.key().clone();
                                let cancel = Arc::new(Cancel::default());
                                let c = Arc::clone(&cancel);
                                let handle =
                                    tokio::spawn(async move { agent.service_loop(key, c).await });
                                slot.insert(ServiceTask { cancel, handle });
                            }
                        }
                    }
                    if let Err(e) = self.remove_orphans(&deps).await {
                        tracing::warn!("removing containers of removed services: {e}");
                    }
                }
                Err(e) => tracing::warn!("reading deployments: {e}"),
            }
            let _ = tokio::time::timeout(PASS_INTERVAL, notified).await;
        }
    }

    /// Removes supervisor-started containers whose deployment or service is no longer declared
    /// (an undeploy or a service dropped from the file; also after a crash mid-undeploy).
    async fn remove_orphans(self: &Arc<Self>, deps: &[DeploymentRecord]) -> Result<()> {
        let mut orphans = Vec::new();
        let mut gone: HashSet<ServiceKey> = HashSet::new();
        for r in self.containers().list()? {
            let Some(o) = Owner::from_labels(&r.labels) else {
                continue;
            };
            let declared = deps.iter().any(|d| {
                d.spec.deployment == o.deployment && d.spec.services.contains_key(&o.service)
            });
            if !declared {
                orphans.push(r.id);
                gone.insert(ServiceKey::of(&o));
            }
        }
        if orphans.is_empty() {
            return Ok(());
        }
        for key in gone {
            self.services.views.lock().remove(&key);
            if deps.iter().any(|r| r.spec.deployment == key.deployment) {
                self.services.store.forget_service(&key)?;
            }
        }
        self.remove_replicas(orphans).await;
        Ok(())
    }

    /// Stops (with a grace period) and removes containers: first every one gets its stop
    /// signal, then each is waited for and removed, [`REMOVE_PARALLELISM`] at a time. So all
    /// shut down at once, and 100 replicas that take a second to exit go in about a second,
    /// not in 100 (one at a time) or 13 (eight at a time, as before).
    pub(crate) async fn remove_replicas(self: &Arc<Self>, ids: Vec<String>) {
        let agent = Arc::clone(self);
        for_each_bounded(&ids, REMOVE_PARALLELISM, move |id| {
            let agent = Arc::clone(&agent);
            async move {
                if let Err(e) = agent.signal_stop(&id).await {
                    tracing::debug!(id, "stop signal before removal: {e}");
                }
            }
        })
        .await;
        let agent = Arc::clone(self);
        for_each_bounded(&ids, REMOVE_PARALLELISM, move |id| {
            let agent = Arc::clone(&agent);
            async move { agent.remove_one(&id).await }
        })
        .await;
    }

    /// Stops and removes one container and forgets its health and exit bookkeeping.
    pub(crate) async fn remove_one(&self, id: &str) {
        if let Err(e) = self.stop_container(id, Some(STOP_GRACE_SECS)).await {
            tracing::debug!(id, "stop before removal: {e}");
        }
        match self.remove_container(id, true).await {
            Ok(()) => {}
            Err(e) if e.kind == crate::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(id, "removing replica: {e}"),
        }
        self.services.health.lock().remove(id);
        if let Err(e) = self.services.store.forget_replica(id) {
            tracing::warn!(id, "forgetting replica state: {e}");
        }
    }

    /// `services`: one row per declared service.
    pub(crate) fn list_services_blocking(&self) -> Result<Vec<super::deploy::ServiceInfo>> {
        let records = self.containers().list()?;
        let mut out = Vec::new();
        for d in self.services.store.list_deployments()? {
            for (name, svc) in &d.spec.services {
                let key = ServiceKey::new(&d.spec.deployment, name);
                out.push(self.service_info(&records, &key, svc)?);
            }
        }
        Ok(out)
    }

    /// The `services` row of one service, from the container `records`.
    fn service_info(
        &self,
        records: &[ContainerRecord],
        key: &ServiceKey,
        svc: &zlayer_spec::Service,
    ) -> Result<super::deploy::ServiceInfo> {
        let kind = OwnerKind::from(svc.kind);
        let running: Vec<&ContainerRecord> = records
            .iter()
            .filter(|r| {
                Owner::from_labels(&r.labels)
                    .is_some_and(|o| ServiceKey::of(&o) == *key && o.kind == kind)
            })
            .filter(|r| r.state == ContainerState::Running)
            .collect();
        let healthy = running
            .iter()
            .filter(|r| {
                svc.health.is_none()
                    || self.services.health_of(&r.id) == Some(HealthStatus::Healthy)
            })
            .count();
        let facts = self.services.store.facts(key)?;
        let view = self
            .services
            .views
            .lock()
            .get(key)
            .cloned()
            .unwrap_or_default();
        let runs = if svc.kind == Kind::Service {
            Vec::new()
        } else {
            let mut r = self.services.store.runs(key)?;
            r.truncate(
                svc.history
                    .unwrap_or(zlayer_spec::defaults::CRON_HISTORY)
                    .max(1) as usize,
            );
            r
        };
        let next_run = svc.schedule.as_ref().and_then(|s| {
            let last = facts
                .last_fire
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())?;
            s.next_after(last.with_timezone(&chrono::Utc))
                .map(|t| t.to_rfc3339())
        });
        Ok(super::deploy::ServiceInfo {
            deployment: key.deployment.clone(),
            service: key.service.clone(),
            kind: svc.kind,
            image: svc.image.name.clone(),
            desired: match svc.kind {
                Kind::Service => svc.desired_replicas(),
                Kind::Job => 1,
                Kind::Cron => 0,
            },
            running: running.len() as u32,
            healthy: healthy as u32,
            restarts: facts.restarts,
            state: view.state.as_str().to_string(),
            message: view.message,
            runs,
            next_run,
            ports: self.services.published.ports_of(key),
        })
    }
}

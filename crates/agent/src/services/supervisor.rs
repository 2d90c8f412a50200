//! The supervisor: one task per declared service that observes its containers (by label) and
//! converges them on the desired state, plus a manager task that starts and ends those tasks
//! as deployments come and go and removes containers whose deployment is gone.
//!
//! Every pass starts from the container records, so a daemon restart simply starts the tasks
//! again: running replicas are adopted (not restarted) and half-done work is finished.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use zlayer_spec::{
    Concurrency, Condition, Health, HealthCheck, InitAction, Kind, Mount, Network, OnFailure,
    PullPolicy, Service,
};

use super::backoff::RestartTracker;
use super::cancel::Cancel;
use super::converge::{converge, Desired, Observed, Step};
use super::events::{Event, EventBus};
use super::health::{in_netns, probe_http, probe_tcp, HealthStatus, HealthTracker};
use super::labels::Owner;
use super::metrics::Metrics;
use super::store::{DeploymentRecord, RunRecord, ServiceStore};
use crate::containers::{ContainerRecord, ContainerState, CreateRequest};
use crate::db::Db;
use crate::error::Result;
use crate::Agent;

/// How often a service task looks again when nothing wakes it.
const PASS_INTERVAL: Duration = Duration::from_millis(500);
/// Grace period when the supervisor stops a replica.
const STOP_GRACE_SECS: u64 = 5;
/// How many containers a pass starts at once.
const START_PARALLELISM: usize = 8;
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
    pub state: String,
    pub message: String,
}

/// The services part of the agent: desired state, events, health results and the supervisor's
/// bookkeeping. Lives inside [`Agent`].
pub struct Services {
    pub(crate) store: ServiceStore,
    pub events: EventBus,
    pub metrics: Metrics,
    pub(crate) health: Mutex<HashMap<String, HealthStatus>>,
    pub(crate) views: Mutex<HashMap<(String, String), View>>,
    /// Published ports of services (forwarded to their healthy replicas).
    pub(crate) published: super::publish::Publisher,
    wake: Notify,
    started: std::sync::atomic::AtomicBool,
    /// The running service tasks, shared by the manager (which starts them) and `undeploy`
    /// (which cancels and awaits them before removing containers).
    tasks: Mutex<HashMap<Key, ServiceTask>>,
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
            let keys: Vec<Key> = tasks
                .keys()
                .filter(|k| k.0 == deployment)
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

    pub(crate) fn set_view(&self, d: &str, s: &str, state: &str, message: String) {
        self.views.lock().insert(
            (d.to_string(), s.to_string()),
            View {
                state: state.to_string(),
                message,
            },
        );
    }
}

/// The replica hash: the spec's container hash plus the resolved environment (so a changed
/// env file or host variable rolls the replicas too).
pub fn replica_hash(svc: &Service, env: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(svc.spec_hash().as_bytes());
    h.update(serde_json::to_vec(env).unwrap_or_default());
    format!("{:x}", h.finalize())[..16].to_string()
}

/// The container request of one replica (or run) of `svc`.
pub fn build_request(
    deployment: &str,
    name: &str,
    svc: &Service,
    env: &BTreeMap<String, String>,
    owner: &Owner,
) -> Result<CreateRequest> {
    let mut volumes = Vec::new();
    let mut tmpfs = Vec::new();
    for m in &svc.storage {
        match m {
            Mount::Named {
                name,
                target,
                readonly,
            } => volumes.push(format!(
                "{name}:{target}{}",
                if *readonly { ":ro" } else { "" }
            )),
            Mount::Bind {
                source,
                target,
                readonly,
            } => volumes.push(format!(
                "{source}:{target}{}",
                if *readonly { ":ro" } else { "" }
            )),
            Mount::Tmpfs { target, size } => tmpfs.push(match size {
                Some(s) => format!("{target}:size={}", s.bytes()),
                None => target.clone(),
            }),
        }
    }
    // Secrets: the file mounted read-only; its content never enters the request or a record.
    for s in &svc.secrets {
        volumes.push(format!("{}:{}:ro", s.source, s.target));
    }
    let suffix = crate::containers::names::new_id()?;
    Ok(CreateRequest {
        image: svc.image.name.clone(),
        name: Some(format!(
            "{deployment}-{name}-{}-{}",
            owner.replica,
            &suffix[..6]
        )),
        cmd: svc.command.args.clone().unwrap_or_default(),
        entrypoint: svc.command.entrypoint.clone(),
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        user: svc.user.clone(),
        workdir: svc.command.workdir.clone(),
        hostname: svc.hostname.clone(),
        memory: svc.resources.memory.map(|m| m.bytes() as i64),
        cpus: svc.resources.cpu.map(|c| c.cpus()),
        pids_limit: svc.resources.pids.map(|p| p as i64),
        volumes,
        tmpfs,
        network: Some(match &svc.network {
            Network::Host => "host".into(),
            Network::None => "none".into(),
            other => other.as_str().to_string(),
        }),
        // On a bridge network `db` then resolves to this deployment's `db.<deployment>` first.
        dns_search: match &svc.network {
            Network::Bridge | Network::Named(_) => vec![deployment.to_string()],
            Network::Host | Network::None => Vec::new(),
        },
        labels: owner.to_labels(),
        pull: Some(
            match svc.image.pull_policy {
                PullPolicy::Always => "always",
                PullPolicy::IfNotPresent => "missing",
                PullPolicy::Never => "never",
            }
            .into(),
        ),
        ..CreateRequest::default()
    })
}

fn started_age(r: &ContainerRecord) -> Duration {
    r.started_at
        .as_deref()
        .or(Some(r.created_at.as_str()))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// The bookkeeping of one service task. What must survive a daemon restart is stored as it
/// changes: the trackers (`service_backoff`, after each pass that changed one) and which exits
/// were counted (`replica_state`); the rest is rebuilt from the container records.
#[derive(Default)]
struct TaskState {
    /// Set by `undeploy` (or when the service leaves its deployment): start nothing more.
    cancel: Arc<Cancel>,
    trackers: HashMap<u32, RestartTracker>,
    counted_exits: HashSet<String>,
    probes: HashMap<String, tokio::task::JoinHandle<()>>,
    init_done: Option<String>,
    waiting_since: Option<Instant>,
    timed_out_reported: bool,
    last_replicas: Option<u32>,
    was_rolling: bool,
    crash_reported: bool,
    /// A tracker changed since the trackers were last stored.
    trackers_dirty: bool,
    /// The replicas whose addresses the service's DNS name and published ports last got.
    endpoint_ids: Option<Vec<String>>,
    /// Why a published port could not be opened (shown by `services` until it works).
    publish_error: Option<String>,
}

impl TaskState {
    /// The state of a service task, with the backoff and counted exits stored before.
    fn load(store: &ServiceStore, key: &Key, cancel: Arc<Cancel>) -> Result<Self> {
        let (now, wall) = (Instant::now(), super::backoff::wall_ms());
        Ok(Self {
            cancel,
            trackers: store
                .backoff(&key.0, &key.1)?
                .iter()
                .map(|(slot, t)| (*slot, RestartTracker::restore(t, now, wall)))
                .collect(),
            counted_exits: store.counted_exits()?,
            ..Self::default()
        })
    }

    /// The restart tracker of `slot`, for a change (it is stored after the pass).
    fn tracker(&mut self, slot: u32) -> &mut RestartTracker {
        self.trackers_dirty = true;
        self.trackers.entry(slot).or_default()
    }

    /// Stores the trackers if a pass changed them.
    fn save_trackers(&mut self, store: &ServiceStore, key: &Key) -> Result<()> {
        if !self.trackers_dirty {
            return Ok(());
        }
        let (now, wall) = (Instant::now(), super::backoff::wall_ms());
        let saved: Vec<_> = self
            .trackers
            .iter()
            .map(|(slot, t)| (*slot, t.save(now, wall)))
            .collect();
        store.put_backoff(&key.0, &key.1, &saved)?;
        self.trackers_dirty = false;
        Ok(())
    }
}

type Key = (String, String);

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
                            wanted.insert((d.spec.deployment.clone(), name.clone()));
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
                                    self.set_dns_service(&k.0, &k.1, &[]);
                                    self.services.published.remove_service(&k.0, &k.1);
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
        let mut gone: HashSet<Key> = HashSet::new();
        for r in self.containers().list()? {
            let Some(o) = Owner::from_labels(&r.labels) else {
                continue;
            };
            let declared = deps.iter().any(|d| {
                d.spec.deployment == o.deployment && d.spec.services.contains_key(&o.service)
            });
            if !declared {
                orphans.push(r.id);
                gone.insert((o.deployment, o.service));
            }
        }
        if orphans.is_empty() {
            return Ok(());
        }
        for (d, s) in gone {
            self.services.views.lock().remove(&(d.clone(), s.clone()));
            if deps.iter().any(|r| r.spec.deployment == d) {
                self.services.store.forget_service(&d, &s)?;
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

    async fn remove_one(&self, id: &str) {
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

    async fn service_loop(self: Arc<Self>, key: Key, cancel: Arc<Cancel>) {
        let mut st = loop {
            match TaskState::load(&self.services.store, &key, Arc::clone(&cancel)) {
                Ok(st) => break st,
                Err(e) => {
                    tracing::warn!(deployment = %key.0, service = %key.1, "loading backoff state: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(PASS_INTERVAL) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        };
        while !cancel.is_cancelled() {
            let notified = self.services.wake.notified();
            match self.services.store.get_deployment(&key.0) {
                Ok(Some(rec)) => {
                    let Some(svc) = rec.spec.services.get(&key.1).cloned() else {
                        break;
                    };
                    let env = rec.env.get(&key.1).cloned().unwrap_or_default();
                    let r = match svc.kind {
                        Kind::Service => self.pass_service(&key, &svc, &env, &rec, &mut st).await,
                        Kind::Job => self.pass_job(&key, &svc, &env, &rec, &mut st).await,
                        Kind::Cron => self.pass_cron(&key, &svc, &env, &rec, &mut st).await,
                    };
                    let r = r.and_then(|()| st.save_trackers(&self.services.store, &key));
                    if let Err(e) = r {
                        tracing::warn!(deployment = %key.0, service = %key.1, "supervisor pass: {e}");
                        self.services
                            .set_view(&key.0, &key.1, "error", e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => tracing::warn!("reading deployment {}: {e}", key.0),
            }
            tokio::select! {
                _ = tokio::time::timeout(PASS_INTERVAL, notified) => {}
                _ = cancel.cancelled() => {}
            }
        }
        for (_, h) in st.probes.drain() {
            h.abort();
        }
    }

    /// Containers of one service (any version), by its labels.
    fn owned(&self, key: &Key, kind: &str) -> Result<Vec<(ContainerRecord, Owner)>> {
        Ok(self
            .containers()
            .list()?
            .into_iter()
            .filter_map(|r| {
                let o = Owner::from_labels(&r.labels)?;
                (o.deployment == key.0 && o.service == key.1 && o.kind == kind).then_some((r, o))
            })
            .collect())
    }

    fn event(&self, action: &str, key: &Key) -> Event {
        Event::new("service", action, &format!("{}/{}", key.0, key.1), &key.1)
            .with("deployment", &key.0)
            .with("service", &key.1)
    }

    /// Creates and starts one container of `svc`; publishes `created`/`started`.
    async fn start_one(
        self: &Arc<Self>,
        key: &Key,
        svc: &Service,
        env: &BTreeMap<String, String>,
        owner: Owner,
    ) -> Result<String> {
        let req = build_request(&key.0, &key.1, svc, env, &owner)?;
        if let Network::Named(net) = &svc.network {
            self.ensure_named_network(net).await?;
        }
        let created = self.create_container(req).await?;
        if svc.network == Network::None {
            if let Some(pid) = self.containers().get(&created.id)?.and_then(|r| r.pid) {
                match tokio::task::spawn_blocking(move || super::health::loopback_up(pid)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(id = %created.id, "loopback: {e}"),
                    Err(e) => tracing::warn!(id = %created.id, "loopback: {e}"),
                }
            }
        }
        for action in ["created", "started"] {
            self.services.events.publish(
                Event::new("container", action, &created.id, &created.name)
                    .with("deployment", &key.0)
                    .with("service", &key.1)
                    .with("replica", owner.replica),
            );
        }
        Ok(created.id)
    }

    /// Starts the health probe of a running replica, once.
    fn ensure_probe(
        self: &Arc<Self>,
        st: &mut TaskState,
        key: &Key,
        r: &ContainerRecord,
        cfg: &Health,
    ) {
        if st.probes.contains_key(&r.id) {
            return;
        }
        // An adopted replica keeps the status the previous daemon stored.
        let status = *self
            .services
            .health
            .lock()
            .entry(r.id.clone())
            .or_insert(HealthStatus::Starting);
        let started = Instant::now()
            .checked_sub(started_age(r))
            .unwrap_or_else(Instant::now);
        let agent = Arc::clone(self);
        let (id, name, pid, cfg, key) = (
            r.id.clone(),
            r.name.clone(),
            r.pid.unwrap_or(0),
            cfg.clone(),
            key.clone(),
        );
        let handle = tokio::spawn(async move {
            let mut tracker = HealthTracker::resume(started, status);
            loop {
                tokio::time::sleep(cfg.interval.get()).await;
                match agent.containers().get(&id) {
                    Ok(Some(r)) if r.state == ContainerState::Running => {}
                    _ => break,
                }
                let result = agent.probe(&id, pid, &cfg).await;
                agent.services.metrics.health_check(result.is_ok());
                if let Some(status) = tracker.record(Instant::now(), result, &cfg) {
                    agent.services.health.lock().insert(id.clone(), status);
                    if let Err(e) = agent.services.store.put_health(&id, status) {
                        tracing::warn!(%id, "storing health: {e}");
                    }
                    let mut ev = Event::new("container", "health_status", &id, &name)
                        .with("deployment", &key.0)
                        .with("service", &key.1)
                        .with("health", status.as_str());
                    if let Some(e) = &tracker.last_error {
                        ev = ev.with("error", e);
                    }
                    agent.services.events.publish(ev);
                    agent.services.wake();
                }
            }
        });
        st.probes.insert(r.id.clone(), handle);
    }

    /// One health probe: TCP/HTTP from inside the container's network namespace, commands
    /// inside the container through the shim.
    async fn probe(&self, id: &str, pid: i64, cfg: &Health) -> std::result::Result<(), String> {
        let timeout = cfg.timeout.get();
        match &cfg.check {
            HealthCheck::Tcp { port } => {
                let port = *port;
                tokio::task::spawn_blocking(move || in_netns(pid, move || probe_tcp(port, timeout)))
                    .await
                    .map_err(|e| e.to_string())?
            }
            HealthCheck::Http { port, path, status } => {
                let (port, path, status) = (*port, path.clone(), *status);
                tokio::task::spawn_blocking(move || {
                    in_netns(pid, move || probe_http(port, &path, status, timeout))
                })
                .await
                .map_err(|e| e.to_string())?
            }
            HealthCheck::Command { command } => {
                let spec = zlayer_runtime::ExecSpec {
                    args: command.clone(),
                    env: Vec::new(),
                    user: None,
                    cwd: None,
                    stdin: false,
                };
                match tokio::time::timeout(timeout, self.exec_output(id, spec)).await {
                    Err(_) => Err(format!("command timed out after {}ms", timeout.as_millis())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(out)) if out.exit_code == 0 => Ok(()),
                    Ok(Ok(out)) => Err(format!(
                        "command exited with {}: {}",
                        out.exit_code,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                }
            }
        }
    }

    /// Whether the service's dependencies are met; `Err(message)` says which one is not.
    fn dependencies_met(
        &self,
        key: &Key,
        svc: &Service,
        rec: &DeploymentRecord,
    ) -> std::result::Result<(), String> {
        for dep in &svc.depends {
            let dkey = (key.0.clone(), dep.service.clone());
            let dsvc = rec.spec.services.get(&dep.service);
            let kind = dsvc.map_or("service", |s| s.kind.as_str());
            let running: Vec<ContainerRecord> = self
                .owned(&dkey, kind)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(r, _)| r)
                .filter(|r| r.state == ContainerState::Running)
                .collect();
            let ok = match dep.condition {
                Condition::Started => !running.is_empty(),
                Condition::Healthy => running.iter().any(|r| {
                    dsvc.and_then(|s| s.health.as_ref()).is_none()
                        || self.services.health_of(&r.id) == Some(HealthStatus::Healthy)
                }),
                Condition::Completed => self
                    .services
                    .store
                    .facts(&dkey.0, &dkey.1)
                    .map(|f| f.job_state.as_deref() == Some("succeeded"))
                    .unwrap_or(false),
            };
            if !ok {
                return Err(format!(
                    "waiting for {} to be {}",
                    dep.service,
                    dep.condition.as_str()
                ));
            }
        }
        Ok(())
    }

    /// Depends and init steps, before a service's first replica (of a version) starts.
    /// `Ok(false)` = not yet.
    async fn ready_to_start(
        self: &Arc<Self>,
        key: &Key,
        svc: &Service,
        env: &BTreeMap<String, String>,
        rec: &DeploymentRecord,
        hash: &str,
        st: &mut TaskState,
    ) -> Result<bool> {
        if let Err(msg) = self.dependencies_met(key, svc, rec) {
            let since = *st.waiting_since.get_or_insert_with(Instant::now);
            let limit = svc
                .depends
                .iter()
                .map(|d| d.timeout.get())
                .max()
                .unwrap_or_default();
            if since.elapsed() > limit {
                if !st.timed_out_reported {
                    st.timed_out_reported = true;
                    self.services
                        .events
                        .publish(self.event("dependency_timeout", key).with("error", &msg));
                }
                self.services.set_view(
                    &key.0,
                    &key.1,
                    "error",
                    format!("{msg} (timed out after {}s)", limit.as_secs()),
                );
            } else {
                self.services.set_view(&key.0, &key.1, "waiting", msg);
            }
            return Ok(false);
        }
        st.waiting_since = None;
        st.timed_out_reported = false;
        if st.init_done.as_deref() == Some(hash) || svc.init.is_empty() {
            return Ok(true);
        }
        for (i, step) in svc.init.iter().enumerate() {
            self.services.set_view(
                &key.0,
                &key.1,
                "starting",
                format!("init step {} ({})", i + 1, step.action.name()),
            );
            if let Err(e) = self
                .run_init_step(key, svc, env, &step.action, &st.cancel)
                .await
            {
                if st.cancel.is_cancelled() {
                    return Ok(false);
                }
                let msg = format!("init step {} ({}) failed: {e}", i + 1, step.action.name());
                self.services
                    .events
                    .publish(self.event("init_failed", key).with("error", &msg));
                if step.on_failure == OnFailure::Fail {
                    self.services.set_view(&key.0, &key.1, "error", msg);
                    let delay = st
                        .tracker(0)
                        .ended(Instant::now(), &svc.effective_restart().backoff);
                    tracing::warn!(deployment = %key.0, service = %key.1, "init failed; retrying in {delay:?}");
                    return Ok(false);
                }
            }
        }
        st.init_done = Some(hash.to_string());
        Ok(true)
    }

    async fn run_init_step(
        self: &Arc<Self>,
        key: &Key,
        svc: &Service,
        env: &BTreeMap<String, String>,
        action: &InitAction,
        cancel: &Cancel,
    ) -> std::result::Result<(), String> {
        let deadline = |t: Duration| Instant::now() + t;
        // The pause between two tries; `Err` when the task is cancelled meanwhile.
        let pause = || async {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => Ok(()),
                _ = cancel.cancelled() => Err("cancelled (undeploy)".to_string()),
            }
        };
        match action {
            InitAction::WaitTcp {
                host,
                port,
                timeout,
            } => {
                let until = deadline(timeout.get());
                let addr = format!("{host}:{port}");
                loop {
                    let a = addr.clone();
                    let ok = tokio::task::spawn_blocking(move || {
                        use std::net::ToSocketAddrs;
                        a.to_socket_addrs()
                            .ok()
                            .and_then(|mut i| i.next())
                            .is_some_and(|sa| {
                                std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(1))
                                    .is_ok()
                            })
                    })
                    .await
                    .unwrap_or(false);
                    if ok {
                        return Ok(());
                    }
                    if Instant::now() > until {
                        return Err(format!(
                            "{addr} did not accept connections within {}s",
                            timeout.get().as_secs()
                        ));
                    }
                    pause().await?;
                }
            }
            InitAction::WaitHttp { url, timeout } => {
                let until = deadline(timeout.get());
                let rest = url
                    .strip_prefix("http://")
                    .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
                let (hostport, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                };
                let (host, port) = match hostport.rsplit_once(':') {
                    Some((h, p)) => (
                        h.to_string(),
                        p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?,
                    ),
                    None => (hostport.to_string(), 80),
                };
                let path = path.to_string();
                loop {
                    let (h, p) = (host.clone(), path.clone());
                    let r = tokio::task::spawn_blocking(move || {
                        super::health::probe_http_host(&h, port, &p, None, Duration::from_secs(1))
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    match r {
                        Ok(()) => return Ok(()),
                        Err(e) if Instant::now() > until => return Err(e),
                        Err(_) => pause().await?,
                    }
                }
            }
            InitAction::Run { command, timeout } => {
                let owner = Owner {
                    deployment: key.0.clone(),
                    service: key.1.clone(),
                    replica: 0,
                    spec_hash: String::new(),
                    kind: "init".into(),
                };
                let mut req =
                    build_request(&key.0, &key.1, svc, env, &owner).map_err(|e| e.to_string())?;
                req.name = Some(format!(
                    "{}-{}-init-{}",
                    key.0,
                    key.1,
                    &crate::containers::names::new_id().map_err(|e| e.to_string())?[..6]
                ));
                req.entrypoint = Some(command.clone());
                req.cmd = Vec::new();
                if cancel.is_cancelled() {
                    return Err("cancelled (undeploy)".into());
                }
                let c = self
                    .create_container(req)
                    .await
                    .map_err(|e| e.to_string())?;
                let waited = tokio::select! {
                    w = tokio::time::timeout(timeout.get(), self.wait_container(&c.id)) => Some(w),
                    _ = cancel.cancelled() => None,
                };
                let result = match waited {
                    None => Err("cancelled (undeploy)".into()),
                    Some(Err(_)) => Err(format!(
                        "did not finish within {}s",
                        timeout.get().as_secs()
                    )),
                    Some(Ok(Err(e))) => Err(e.to_string()),
                    Some(Ok(Ok(w))) if w.exit_code == 0 => Ok(()),
                    Some(Ok(Ok(w))) => Err(format!("exited with code {}", w.exit_code)),
                };
                self.remove_one(&c.id).await;
                result
            }
        }
    }

    async fn pass_service(
        self: &Arc<Self>,
        key: &Key,
        svc: &Service,
        env: &BTreeMap<String, String>,
        rec: &DeploymentRecord,
        st: &mut TaskState,
    ) -> Result<()> {
        let hash = replica_hash(svc, env);
        let restart = svc.effective_restart();
        let now = Instant::now();
        self.sync_published(key, svc, st);
        let owned = self.owned(key, "service")?;
        let mut facts = self.services.store.facts(&key.0, &key.1)?;
        let mut seen = Vec::new();
        let mut running = 0;
        let mut healthy = 0;
        for (r, o) in &owned {
            let is_running = r.state == ContainerState::Running;
            let health = match (&svc.health, is_running) {
                (Some(cfg), true) => {
                    self.ensure_probe(st, key, r, cfg);
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
            if !is_running && o.spec_hash == hash && st.counted_exits.insert(r.id.clone()) {
                let tracker = st.tracker(o.replica);
                let delay = tracker.ended(now, &restart.backoff);
                let saved = tracker.save(now, super::backoff::wall_ms());
                let mut ev = Event::new("container", "died", &r.id, &r.name)
                    .with("deployment", &key.0)
                    .with("service", &key.1)
                    .with("exit_code", r.exit_code.unwrap_or(-1));
                if let Some(e) = &r.error {
                    ev = ev.with("error", e);
                }
                self.services.events.publish(ev);
                if r.oom_killed {
                    self.services.events.publish(
                        Event::new("container", "oom", &r.id, &r.name).with("service", &key.1),
                    );
                }
                let restarting =
                    super::backoff::should_restart(restart.policy, r.exit_code, r.oom_killed);
                if restarting {
                    facts.restarts += 1;
                    self.services.metrics.restart();
                    tracing::info!(deployment = %key.0, service = %key.1, replica = o.replica, "replica exited; restart in {delay:?}");
                }
                self.services
                    .store
                    .count_exit(&key.0, &key.1, &facts, &r.id, o.replica, saved)?;
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
        let update = svc.update.clone().unwrap_or_default();
        // `deploy` and `scale` refuse more, but a deployment stored before (by an older
        // build, or under a higher limit) may ask for more: run no more than the limit.
        let max_replicas = self.config().file.limits.max_replicas;
        let capped = svc
            .desired_replicas()
            .min(u32::try_from(max_replicas).unwrap_or(u32::MAX));
        let want = Desired {
            replicas: capped,
            hash: hash.clone(),
            policy: restart.policy,
            order: update.order,
            health_timeout: update.health_timeout.get(),
            rollout_blocked: facts.failed_hash.as_deref() == Some(hash.as_str()),
        };
        let pass = converge(&want, &seen, |slot| {
            st.trackers.get(&slot).is_none_or(|t| t.ready(now))
        });

        // Dependencies and init steps gate starts while nothing of this version runs yet.
        let current_running = seen.iter().any(|o| o.running && o.hash == hash);
        let has_starts = pass.steps.iter().any(|s| matches!(s, Step::Start { .. }));
        let may_start = !has_starts
            || current_running
            || self.ready_to_start(key, svc, env, rec, &hash, st).await?;

        let mut removals = Vec::new();
        let mut starts = Vec::new();
        for step in &pass.steps {
            match step {
                Step::Remove { id, slot, reason } => {
                    if *reason == super::converge::Reason::Unhealthy {
                        st.tracker(*slot).ended(now, &restart.backoff);
                        facts.restarts += 1;
                        self.services.metrics.restart();
                        self.services.store.put_facts(&key.0, &key.1, &facts)?;
                        self.services
                            .events
                            .publish(self.event("replaced_unhealthy", key).with("container", id));
                    }
                    tracing::info!(deployment = %key.0, service = %key.1, slot, "removing {id}: {}", reason.as_str());
                    removals.push(id.clone());
                }
                Step::RolloutFailed { id, slot, why } => {
                    facts.failed_hash = Some(hash.clone());
                    self.services.store.put_facts(&key.0, &key.1, &facts)?;
                    self.services.events.publish(
                        self.event("rollout_failed", key)
                            .with("replica", slot)
                            .with("error", why),
                    );
                    tracing::warn!(deployment = %key.0, service = %key.1, "rollout failed: {why}");
                    removals.push(id.clone());
                }
                Step::Start { slot } if may_start => starts.push(*slot),
                Step::Start { .. } => {}
            }
        }
        // Replicas about to go leave DNS and the published ports before they stop.
        let leaving: HashSet<String> = removals.iter().cloned().collect();
        self.sync_endpoints(key, svc, &owned, &leaving, st);
        if !removals.is_empty() {
            self.remove_replicas(removals).await;
        }
        if !starts.is_empty() {
            self.start_slots(key, svc, env, &hash, &starts, st).await;
            // Replicas without a health check serve as soon as they run.
            let owned = self.owned(key, "service")?;
            self.sync_endpoints(key, svc, &owned, &HashSet::new(), st);
        }

        // What `services` shows, and the service-level events.
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
                .publish(self.event("rolled", key).with("spec_hash", &hash));
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
        let (state, message) = if capped < svc.desired_replicas() {
            (
                "error",
                format!(
                    "asks for {} replicas, over this node's limit of {max_replicas} ({}): running {capped}",
                    svc.desired_replicas(),
                    crate::limits::MAX_REPLICAS_KEY
                ),
            )
        } else if let Some(e) = &st.publish_error {
            ("error", e.clone())
        } else if want.rollout_blocked {
            ("rollout-failed", "the new version failed; the previous replicas keep serving (deploy again to retry)".to_string())
        } else if crash {
            let wait = pass
                .backing_off
                .iter()
                .filter_map(|s| st.trackers.get(s))
                .map(|t| t.remaining(now))
                .max()
                .unwrap_or_default();
            ("crash-loop", format!("restarting in {}s", wait.as_secs()))
        } else if pass.rolling {
            ("rolling", String::new())
        } else if !may_start {
            return Ok(()); // ready_to_start has set the view
        } else if running >= want.replicas as usize && healthy >= want.replicas as usize {
            ("running", String::new())
        } else {
            ("starting", String::new())
        };
        self.services.set_view(&key.0, &key.1, state, message);
        // Forget probes and exit bookkeeping of containers that are gone.
        let ids: HashSet<&str> = owned.iter().map(|(r, _)| r.id.as_str()).collect();
        st.probes.retain(|id, h| {
            let keep = ids.contains(id.as_str());
            if !keep {
                h.abort();
            }
            keep
        });
        st.counted_exits.retain(|id| ids.contains(id.as_str()));
        Ok(())
    }

    /// Points the service's DNS name (`service`, `service.deployment`) and its published ports
    /// at its healthy running replicas (running ones when it has no health check), except
    /// `leaving`. Does nothing when that set did not change since the last call.
    fn sync_endpoints(
        &self,
        key: &Key,
        svc: &Service,
        owned: &[(ContainerRecord, Owner)],
        leaving: &HashSet<String>,
        st: &mut TaskState,
    ) {
        let mut ids: Vec<String> = owned
            .iter()
            .map(|(r, _)| r)
            .filter(|r| r.state == ContainerState::Running && !leaving.contains(&r.id))
            .filter(|r| {
                svc.health.is_none()
                    || self.services.health_of(&r.id) == Some(HealthStatus::Healthy)
            })
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        if st.endpoint_ids.as_ref() == Some(&ids) {
            return;
        }
        let ips: Vec<std::net::Ipv4Addr> = ids
            .iter()
            .filter_map(|id| self.networking().sandbox(id)?.ipv4())
            .collect();
        tracing::debug!(deployment = %key.0, service = %key.1, ?ips, "service endpoints");
        self.set_dns_service(&key.0, &key.1, &ips);
        self.services.published.set_backends(&key.0, &key.1, &ips);
        st.endpoint_ids = Some(ids);
    }

    /// Opens (and closes) the service's published ports; a failure is shown by `services` and
    /// reported once as a `publish_failed` event, and retried on every pass.
    fn sync_published(&self, key: &Key, svc: &Service, st: &mut TaskState) {
        let res = self
            .services
            .published
            .sync(&key.0, &key.1, &svc.endpoints, |port, proto| {
                self.run_container_publishing(port, proto)
            });
        let err = res.err();
        if err.is_some() && err != st.publish_error {
            let e = err.clone().unwrap_or_default();
            tracing::warn!(deployment = %key.0, service = %key.1, "{e}");
            self.services
                .events
                .publish(self.event("publish_failed", key).with("error", &e));
        }
        st.publish_error = err;
    }

    /// The `run -p` container publishing a host port, if one does (its DNAT rule would take
    /// the port's traffic from a service's listener).
    pub(crate) fn run_container_publishing(
        &self,
        port: u16,
        proto: zlayer_spec::Protocol,
    ) -> Option<String> {
        let mgr = self.networking().manager().ok()?;
        let want = match proto {
            zlayer_spec::Protocol::Tcp => zlayer_network::Protocol::Tcp,
            zlayer_spec::Protocol::Udp => zlayer_network::Protocol::Udp,
        };
        let sandbox = mgr.list_sandboxes().ok()?.into_iter().find(|s| {
            s.ports
                .iter()
                .any(|p| p.host_port == port && p.protocol == want)
        })?;
        let name = self
            .containers()
            .get(&sandbox.id)
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or(sandbox.id);
        Some(format!("container {name}"))
    }

    /// Creates a service's named network on first use (a deployment brings what it needs;
    /// `network rm` removes it once nothing uses it).
    async fn ensure_named_network(&self, net: &str) -> Result<()> {
        let mgr = self.networking().ensure_ready().await?;
        if mgr.network(net).is_ok() {
            return Ok(());
        }
        match self.create_network(net, None).await {
            Ok(_) => Ok(()),
            // Another replica created it meanwhile.
            Err(e) if e.kind == crate::ErrorKind::Conflict && mgr.network(net).is_ok() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn start_slots(
        self: &Arc<Self>,
        key: &Key,
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
                    deployment: key.0.clone(),
                    service: key.1.clone(),
                    replica: slot,
                    spec_hash: hash.to_string(),
                    kind: "service".into(),
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
                    tracing::warn!(deployment = %key.0, service = %key.1, slot, "starting replica failed (retry in {delay:?}): {e}");
                    self.services.events.publish(
                        self.event("start_failed", key)
                            .with("replica", slot)
                            .with("error", &e),
                    );
                    self.services
                        .set_view(&key.0, &key.1, "error", e.to_string());
                }
            }
        }
    }

    async fn pass_job(
        self: &Arc<Self>,
        key: &Key,
        svc: &Service,
        env: &BTreeMap<String, String>,
        rec: &DeploymentRecord,
        st: &mut TaskState,
    ) -> Result<()> {
        let hash = replica_hash(svc, env);
        let store = &self.services.store;
        let mut facts = store.facts(&key.0, &key.1)?;
        if facts.job_hash.as_deref() != Some(hash.as_str()) {
            facts.job_hash = Some(hash.clone());
            facts.job_attempts = 0;
            facts.job_state = None;
            facts.job_exit_code = None;
            store.put_facts(&key.0, &key.1, &facts)?;
        }
        let owned = self.owned(key, "job")?;
        // Containers of an earlier version of the job go.
        let stale: Vec<String> = owned
            .iter()
            .filter(|(_, o)| o.spec_hash != hash)
            .map(|(r, _)| r.id.clone())
            .collect();
        if !stale.is_empty() {
            self.remove_replicas(stale).await;
        }
        let mine: Vec<&(ContainerRecord, Owner)> =
            owned.iter().filter(|(_, o)| o.spec_hash == hash).collect();
        let attempt = facts.job_attempts;
        let latest = mine.iter().find(|(_, o)| o.replica == attempt);
        let retries = svc.retries.unwrap_or(0);
        let show = |this: &Self, state: &str, msg: String| {
            this.services.set_view(&key.0, &key.1, state, msg)
        };
        match facts.job_state.as_deref() {
            Some("succeeded") => {
                show(
                    self,
                    "completed",
                    format!("exit code 0 after {attempt} attempt(s)"),
                );
                return Ok(());
            }
            Some("failed") => {
                show(
                    self,
                    "failed",
                    format!(
                        "exit code {} after {attempt} attempt(s)",
                        facts.job_exit_code.unwrap_or(-1)
                    ),
                );
                return Ok(());
            }
            _ => {}
        }
        if let Some((r, _)) = latest {
            if r.state == ContainerState::Running {
                if let Some(t) = svc.timeout {
                    if started_age(r) > t.get() {
                        tracing::warn!(deployment = %key.0, service = %key.1, "job exceeded its timeout of {}s", t.get().as_secs());
                        let _ = self.stop_container(&r.id, Some(STOP_GRACE_SECS)).await;
                    }
                }
                show(self, "running", format!("attempt {attempt}"));
                return Ok(());
            }
            if r.state == ContainerState::Exited && facts.job_state.as_deref() == Some("running") {
                let code = r.exit_code.unwrap_or(-1);
                facts.job_exit_code = Some(code);
                let ok = code == 0;
                store.put_run(
                    &key.0,
                    &key.1,
                    &RunRecord {
                        run: attempt,
                        container: r.id.clone(),
                        spec_hash: hash.clone(),
                        scheduled_at: r.created_at.clone(),
                        finished_at: r.finished_at.clone(),
                        exit_code: Some(code),
                        state: if ok {
                            "succeeded".into()
                        } else {
                            "failed".into()
                        },
                    },
                )?;
                self.services.events.publish(
                    self.event("job_finished", key)
                        .with("attempt", attempt)
                        .with("exit_code", code),
                );
                if ok {
                    facts.job_state = Some("succeeded".into());
                } else if attempt > retries {
                    facts.job_state = Some("failed".into());
                } else {
                    facts.job_state = Some("retrying".into());
                    let b = svc.backoff.clone().unwrap_or_default();
                    st.tracker(0).ended(Instant::now(), &b);
                }
                store.put_facts(&key.0, &key.1, &facts)?;
                self.services.wake();
                return Ok(());
            }
        }
        // Start attempt N+1 (or redo attempt N if the daemon died before its container existed).
        if st
            .trackers
            .get(&0)
            .is_some_and(|t| !t.ready(Instant::now()))
        {
            show(
                self,
                "waiting",
                format!(
                    "retrying in {}s",
                    st.trackers[&0].remaining(Instant::now()).as_secs()
                ),
            );
            return Ok(());
        }
        if !self.ready_to_start(key, svc, env, rec, &hash, st).await? {
            return Ok(());
        }
        if st.cancel.is_cancelled() {
            return Ok(());
        }
        let next =
            if facts.job_state.as_deref() == Some("running") && latest.is_none() && attempt > 0 {
                attempt
            } else {
                attempt + 1
            };
        // Only the latest attempt's container is kept (for its logs).
        let old: Vec<String> = mine.iter().map(|(r, _)| r.id.clone()).collect();
        if !old.is_empty() {
            self.remove_replicas(old).await;
        }
        facts.job_attempts = next;
        facts.job_state = Some("running".into());
        store.put_facts(&key.0, &key.1, &facts)?;
        let owner = Owner {
            deployment: key.0.clone(),
            service: key.1.clone(),
            replica: next,
            spec_hash: hash.clone(),
            kind: "job".into(),
        };
        match self.start_one(key, svc, env, owner).await {
            Ok(id) => {
                store.put_run(
                    &key.0,
                    &key.1,
                    &RunRecord {
                        run: next,
                        container: id,
                        spec_hash: hash,
                        scheduled_at: chrono::Utc::now().to_rfc3339(),
                        finished_at: None,
                        exit_code: None,
                        state: "running".into(),
                    },
                )?;
                show(self, "running", format!("attempt {next}"));
            }
            Err(e) => {
                facts.job_state = if next > retries {
                    Some("failed".into())
                } else {
                    Some("retrying".into())
                };
                store.put_facts(&key.0, &key.1, &facts)?;
                st.tracker(0)
                    .ended(Instant::now(), &svc.backoff.clone().unwrap_or_default());
                show(self, "error", e.to_string());
            }
        }
        Ok(())
    }

    async fn pass_cron(
        self: &Arc<Self>,
        key: &Key,
        svc: &Service,
        env: &BTreeMap<String, String>,
        rec: &DeploymentRecord,
        st: &mut TaskState,
    ) -> Result<()> {
        let Some(schedule) = &svc.schedule else {
            return Ok(());
        };
        let store = &self.services.store;
        let hash = replica_hash(svc, env);
        let mut facts = store.facts(&key.0, &key.1)?;
        let now = chrono::Utc::now();
        let last = facts
            .last_fire
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let last = match last {
            Some(t) => t,
            None => {
                facts.last_fire = Some(now.to_rfc3339());
                store.put_facts(&key.0, &key.1, &facts)?;
                now
            }
        };
        // Finished runs: record exit codes; overdue runs: stop.
        let owned = self.owned(key, "cron")?;
        let mut runs = store.runs(&key.0, &key.1)?;
        let mut active = Vec::new();
        for run in runs.iter_mut().filter(|r| r.state == "running") {
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
                    run.state = if code == 0 {
                        "succeeded".into()
                    } else {
                        "failed".into()
                    };
                    store.put_run(&key.0, &key.1, run)?;
                    self.services.events.publish(
                        self.event("cron_finished", key)
                            .with("run", run.run)
                            .with("exit_code", code),
                    );
                }
                None => {
                    run.state = "lost".into();
                    store.put_run(&key.0, &key.1, run)?;
                }
            }
        }
        let next = schedule.next_after(last);
        if let Some(due) = next.filter(|t| *t <= now && !st.cancel.is_cancelled()) {
            // Missed fires while the daemon was down collapse into one run.
            facts.last_fire = Some(now.to_rfc3339());
            store.put_facts(&key.0, &key.1, &facts)?;
            let concurrency = svc.concurrency.unwrap_or_default();
            let run_no = store.next_run(&key.0, &key.1)?;
            let mut record = RunRecord {
                run: run_no,
                container: String::new(),
                spec_hash: hash.clone(),
                scheduled_at: due.to_rfc3339(),
                finished_at: None,
                exit_code: None,
                state: "running".into(),
            };
            if !active.is_empty() && concurrency == Concurrency::Forbid {
                record.state = "skipped".into();
                store.put_run(&key.0, &key.1, &record)?;
                self.services
                    .events
                    .publish(self.event("cron_skipped", key).with("run", run_no));
            } else if self.dependencies_met(key, svc, rec).is_ok() {
                if concurrency == Concurrency::Replace && !active.is_empty() {
                    self.remove_replicas(active.clone()).await;
                }
                let owner = Owner {
                    deployment: key.0.clone(),
                    service: key.1.clone(),
                    replica: run_no,
                    spec_hash: hash,
                    kind: "cron".into(),
                };
                match self.start_one(key, svc, env, owner).await {
                    Ok(id) => {
                        record.container = id;
                        store.put_run(&key.0, &key.1, &record)?;
                        self.services
                            .events
                            .publish(self.event("cron_fired", key).with("run", run_no));
                    }
                    Err(e) => {
                        record.state = "failed".into();
                        store.put_run(&key.0, &key.1, &record)?;
                        self.services
                            .set_view(&key.0, &key.1, "error", e.to_string());
                        return Ok(());
                    }
                }
            }
        }
        // Keep the last `history` finished runs (and their containers, for logs).
        let keep = svc.history.unwrap_or(zlayer_spec::defaults::CRON_HISTORY) as usize;
        let runs = store.runs(&key.0, &key.1)?;
        let finished: Vec<&RunRecord> = runs.iter().filter(|r| r.state != "running").collect();
        let mut drop_ids = Vec::new();
        for r in finished.iter().skip(keep) {
            store.delete_run(&key.0, &key.1, r.run)?;
            if !r.container.is_empty() {
                drop_ids.push(r.container.clone());
            }
        }
        if !drop_ids.is_empty() {
            self.remove_replicas(drop_ids).await;
        }
        let next = schedule
            .next_after(now.max(last))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let msg = format!("next run {next}");
        self.services.set_view(
            &key.0,
            &key.1,
            if active.is_empty() {
                "scheduled"
            } else {
                "running"
            },
            msg,
        );
        Ok(())
    }

    /// `services`: one row per declared service.
    pub(crate) fn list_services_blocking(&self) -> Result<Vec<super::deploy::ServiceInfo>> {
        let records = self.containers().list()?;
        let mut out = Vec::new();
        for d in self.services.store.list_deployments()? {
            for (name, svc) in &d.spec.services {
                let kind = svc.kind.as_str();
                let mine: Vec<&ContainerRecord> = records
                    .iter()
                    .filter(|r| {
                        Owner::from_labels(&r.labels).is_some_and(|o| {
                            o.deployment == d.spec.deployment
                                && &o.service == name
                                && o.kind == kind
                        })
                    })
                    .collect();
                let running: Vec<&&ContainerRecord> = mine
                    .iter()
                    .filter(|r| r.state == ContainerState::Running)
                    .collect();
                let healthy = running
                    .iter()
                    .filter(|r| {
                        svc.health.is_none()
                            || self.services.health_of(&r.id) == Some(HealthStatus::Healthy)
                    })
                    .count();
                let facts = self.services.store.facts(&d.spec.deployment, name)?;
                let view = self
                    .services
                    .views
                    .lock()
                    .get(&(d.spec.deployment.clone(), name.clone()))
                    .cloned()
                    .unwrap_or_else(|| View {
                        state: "pending".into(),
                        message: String::new(),
                    });
                let runs = if svc.kind == Kind::Service {
                    Vec::new()
                } else {
                    let mut r = self.services.store.runs(&d.spec.deployment, name)?;
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
                out.push(super::deploy::ServiceInfo {
                    deployment: d.spec.deployment.clone(),
                    service: name.clone(),
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
                    state: view.state,
                    message: view.message,
                    runs,
                    next_run,
                    ports: self.services.published.ports_of(&d.spec.deployment, name),
                });
            }
        }
        Ok(out)
    }
}

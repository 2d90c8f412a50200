//! One service task: its bookkeeping ([`TaskState`]), its loop (one pass of the service's kind
//! each time something wakes it) and what every kind of pass needs: the service's containers,
//! its events and starting one container.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zlayer_spec::{Kind, Network, Service};

use super::backoff::RestartTracker;
use super::cancel::Cancel;
use super::events::Event;
use super::key::ServiceKey;
use super::labels::Owner;
use super::request::build_request;
use super::state::{OwnerKind, ViewState};
use super::store::{DeploymentRecord, ServiceStore};
use super::supervisor::PASS_INTERVAL;
use crate::containers::ContainerRecord;
use crate::error::Result;
use crate::Agent;

/// How long a container has run (since its start, or its creation if it never started).
pub(crate) fn started_age(r: &ContainerRecord) -> Duration {
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

/// What every pass of a service works from: which service, its spec and environment as
/// deployed, and the deployment (whose other services are its dependencies).
#[derive(Clone, Copy)]
pub(crate) struct PassInput<'a> {
    pub key: &'a ServiceKey,
    pub svc: &'a Service,
    pub env: &'a BTreeMap<String, String>,
    pub rec: &'a DeploymentRecord,
}

/// The bookkeeping of one service task. What must survive a daemon restart is stored as it
/// changes: the trackers (`service_backoff`, after each pass that changed one) and which exits
/// were counted (`replica_state`); the rest is rebuilt from the container records.
#[derive(Default)]
pub(crate) struct TaskState {
    /// Set by `undeploy` (or when the service leaves its deployment): start nothing more.
    pub cancel: Arc<Cancel>,
    pub trackers: HashMap<u32, RestartTracker>,
    pub counted_exits: HashSet<String>,
    pub probes: HashMap<String, tokio::task::JoinHandle<()>>,
    pub init_done: Option<String>,
    pub waiting_since: Option<Instant>,
    pub timed_out_reported: bool,
    pub last_replicas: Option<u32>,
    pub was_rolling: bool,
    pub crash_reported: bool,
    /// A tracker changed since the trackers were last stored.
    trackers_dirty: bool,
    /// The replicas whose addresses the service's DNS name and published ports last got.
    pub endpoint_ids: Option<Vec<String>>,
    /// Why a published port could not be opened (shown by `services` until it works).
    pub publish_error: Option<String>,
}

impl TaskState {
    /// The state of a service task, with the backoff and counted exits stored before.
    fn load(store: &ServiceStore, key: &ServiceKey, cancel: Arc<Cancel>) -> Result<Self> {
        let (now, wall) = (Instant::now(), super::backoff::wall_ms());
        Ok(Self {
            cancel,
            trackers: store
                .backoff(key)?
                .iter()
                .map(|(slot, t)| (*slot, RestartTracker::restore(t, now, wall)))
                .collect(),
            counted_exits: store.counted_exits()?,
            ..Self::default()
        })
    }

    /// The restart tracker of `slot`, for a change (it is stored after the pass).
    pub fn tracker(&mut self, slot: u32) -> &mut RestartTracker {
        self.trackers_dirty = true;
        self.trackers.entry(slot).or_default()
    }

    /// Stores the trackers if a pass changed them.
    fn save_trackers(&mut self, store: &ServiceStore, key: &ServiceKey) -> Result<()> {
        if !self.trackers_dirty {
            return Ok(());
        }
        let (now, wall) = (Instant::now(), super::backoff::wall_ms());
        let saved: Vec<_> = self
            .trackers
            .iter()
            .map(|(slot, t)| (*slot, t.save(now, wall)))
            .collect();
        store.put_backoff(key, &saved)?;
        self.trackers_dirty = false;
        Ok(())
    }
}

impl Agent {
    /// The task of one service: a pass of its kind whenever something wakes it (or every
    /// [`PASS_INTERVAL`]), until it is cancelled or the service is no longer declared.
    pub(crate) async fn service_loop(self: Arc<Self>, key: ServiceKey, cancel: Arc<Cancel>) {
        let mut st = loop {
            match TaskState::load(&self.services.store, &key, Arc::clone(&cancel)) {
                Ok(st) => break st,
                Err(e) => {
                    tracing::warn!(deployment = %key.deployment, service = %key.service, "loading backoff state: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(PASS_INTERVAL) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        };
        while !cancel.is_cancelled() {
            let notified = self.services.wake.notified();
            match self.services.store.get_deployment(&key.deployment) {
                Ok(Some(rec)) => {
                    let Some(svc) = rec.spec.services.get(&key.service).cloned() else {
                        break;
                    };
                    let env = rec.env.get(&key.service).cloned().unwrap_or_default();
                    let input = PassInput {
                        key: &key,
                        svc: &svc,
                        env: &env,
                        rec: &rec,
                    };
                    let r = match svc.kind {
                        Kind::Service => self.pass_service(input, &mut st).await,
                        Kind::Job => self.pass_job(input, &mut st).await,
                        Kind::Cron => self.pass_cron(input, &mut st).await,
                    };
                    let r = r.and_then(|()| st.save_trackers(&self.services.store, &key));
                    if let Err(e) = r {
                        tracing::warn!(deployment = %key.deployment, service = %key.service, "supervisor pass: {e}");
                        self.services
                            .set_view(&key, ViewState::Error, e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => tracing::warn!("reading deployment {}: {e}", key.deployment),
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
    pub(crate) fn owned(
        &self,
        key: &ServiceKey,
        kind: OwnerKind,
    ) -> Result<Vec<(ContainerRecord, Owner)>> {
        Ok(self
            .containers()
            .list()?
            .into_iter()
            .filter_map(|r| {
                let o = Owner::from_labels(&r.labels)?;
                (o.deployment == key.deployment && o.service == key.service && o.kind == kind)
                    .then_some((r, o))
            })
            .collect())
    }

    /// A service-level event of `key`.
    pub(crate) fn event(&self, action: &str, key: &ServiceKey) -> Event {
        Event::new("service", action, &key.to_string(), &key.service)
            .with("deployment", &key.deployment)
            .with("service", &key.service)
    }

    /// Creates and starts one container of `svc`; publishes `created`/`started`.
    pub(crate) async fn start_one(
        self: &Arc<Self>,
        key: &ServiceKey,
        svc: &Service,
        env: &BTreeMap<String, String>,
        owner: Owner,
    ) -> Result<String> {
        let req = build_request(key, svc, env, &owner)?;
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
                    .with("deployment", &key.deployment)
                    .with("service", &key.service)
                    .with("replica", owner.replica),
            );
        }
        Ok(created.id)
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
}

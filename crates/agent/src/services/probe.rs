//! The health probe task of a running replica: it probes every `interval`, feeds the results
//! to a [`HealthTracker`] and publishes (and stores) each change of status.

use std::sync::Arc;
use std::time::Instant;

use zlayer_spec::{Health, HealthCheck};

use super::events::Event;
use super::health::{in_netns, probe_http, probe_tcp, HealthStatus, HealthTracker, ProbeError};
use super::key::ServiceKey;
use super::task::{started_age, TaskState};
use crate::containers::{ContainerRecord, ContainerState};
use crate::Agent;

impl Agent {
    /// Starts the health probe of a running replica, once.
    pub(crate) fn ensure_probe(
        self: &Arc<Self>,
        st: &mut TaskState,
        key: &ServiceKey,
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
                    // A paused replica cannot answer: not probed (so not replaced) until
                    // it is unpaused.
                    Ok(Some(r)) if r.state == ContainerState::Running => {
                        if agent.is_paused(&r) {
                            continue;
                        }
                    }
                    _ => break,
                }
                let result = agent.probe(&id, pid, &cfg).await;
                agent.services.metrics.health_check(result.is_ok());
                if let Some(status) = tracker.record(Instant::now(), result, &cfg) {
                    agent.health_changed(&key, &id, &name, status, &tracker);
                }
            }
        });
        st.probes.insert(r.id.clone(), handle);
    }

    /// Keeps, stores and announces a replica's new health status.
    fn health_changed(
        &self,
        key: &ServiceKey,
        id: &str,
        name: &str,
        status: HealthStatus,
        tracker: &HealthTracker,
    ) {
        self.services.health.lock().insert(id.to_string(), status);
        if let Err(e) = self.services.store.put_health(id, status) {
            tracing::warn!(%id, "storing health: {e}");
        }
        let mut ev = Event::new("container", "health_status", id, name)
            .with("deployment", &key.deployment)
            .with("service", &key.service)
            .with("health", status.as_str());
        if let Some(e) = &tracker.last_error {
            ev = ev.with("error", e);
        }
        self.services.events.publish(ev);
        self.services.wake();
    }

    /// One health probe: TCP/HTTP from inside the container's network namespace, commands
    /// inside the container through the shim.
    async fn probe(&self, id: &str, pid: i64, cfg: &Health) -> Result<(), ProbeError> {
        let timeout = cfg.timeout.get();
        match &cfg.check {
            HealthCheck::Tcp { port } => {
                let port = *port;
                tokio::task::spawn_blocking(move || in_netns(pid, move || probe_tcp(port, timeout)))
                    .await?
            }
            HealthCheck::Http { port, path, status } => {
                let (port, path, status) = (*port, path.clone(), *status);
                tokio::task::spawn_blocking(move || {
                    in_netns(pid, move || probe_http(port, &path, status, timeout))
                })
                .await?
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
                    Err(_) => Err(ProbeError::CommandTimeout(timeout.as_millis())),
                    Ok(Err(e)) => Err(e.into()),
                    Ok(Ok(out)) if out.exit_code == 0 => Ok(()),
                    Ok(Ok(out)) => Err(ProbeError::CommandFailed {
                        code: out.exit_code.into(),
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    }),
                }
            }
        }
    }
}

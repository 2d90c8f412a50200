//! What gates a service's first replica of a version: its dependencies (`depends`, with their
//! timeout) and its init steps (`wait_tcp`, `wait_http`, `run`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zlayer_spec::{Condition, InitAction, OnFailure, Service};

use super::cancel::Cancel;
use super::health::{HealthStatus, ProbeError};
use super::key::ServiceKey;
use super::labels::Owner;
use super::request::build_request;
use super::state::{JobState, OwnerKind, ViewState};
use super::store::DeploymentRecord;
use super::task::{PassInput, TaskState};
use crate::containers::ContainerState;
use crate::error::{AgentError, Result};
use crate::Agent;

/// Why a service may not start yet.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unmet {
    #[error("waiting for {service} to be {condition}")]
    Dependency {
        service: String,
        condition: &'static str,
    },
    /// The dependency's containers or facts could not be read.
    #[error("{0}")]
    Lookup(#[from] AgentError),
}

/// Why an init step failed; the text is shown by `services` and in `init_failed` events.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("cancelled (undeploy)")]
    Cancelled,
    #[error("{addr} did not accept connections within {secs}s")]
    TcpTimeout { addr: String, secs: u64 },
    #[error("{0}: only http:// URLs are supported")]
    NotHttp(String),
    #[error("{0}: bad port")]
    BadPort(String),
    #[error("{0}")]
    Probe(#[from] ProbeError),
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error("did not finish within {0}s")]
    RunTimeout(u64),
    #[error("exited with code {0}")]
    Exited(i64),
}

/// The pause between two tries of a wait step.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Waits [`RETRY_PAUSE`]; `Err` when the task is cancelled meanwhile.
async fn pause(cancel: &Cancel) -> std::result::Result<(), InitError> {
    tokio::select! {
        _ = tokio::time::sleep(RETRY_PAUSE) => Ok(()),
        _ = cancel.cancelled() => Err(InitError::Cancelled),
    }
}

/// `host:port` and path of an `http://` URL (port 80 when none is given).
fn split_http_url(url: &str) -> std::result::Result<(String, u16, String), InitError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| InitError::NotHttp(url.to_string()))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| InitError::BadPort(url.to_string()))?,
        ),
        None => (hostport.to_string(), 80),
    };
    Ok((host, port, path.to_string()))
}

/// `wait_tcp`: until `addr` accepts a connection, or `timeout`.
async fn wait_tcp(
    addr: String,
    timeout: Duration,
    cancel: &Cancel,
) -> std::result::Result<(), InitError> {
    let until = Instant::now() + timeout;
    loop {
        let a = addr.clone();
        let ok = tokio::task::spawn_blocking(move || {
            use std::net::ToSocketAddrs;
            a.to_socket_addrs()
                .ok()
                .and_then(|mut i| i.next())
                .is_some_and(|sa| {
                    std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_ok()
                })
        })
        .await
        .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(InitError::TcpTimeout {
                addr,
                secs: timeout.as_secs(),
            });
        }
        pause(cancel).await?;
    }
}

/// `wait_http`: until `url` answers 2xx/3xx, or `timeout` (then the last failure).
async fn wait_http(
    url: &str,
    timeout: Duration,
    cancel: &Cancel,
) -> std::result::Result<(), InitError> {
    let until = Instant::now() + timeout;
    let (host, port, path) = split_http_url(url)?;
    loop {
        let (h, p) = (host.clone(), path.clone());
        let r = tokio::task::spawn_blocking(move || {
            super::health::probe_http_host(&h, port, &p, None, Duration::from_secs(1))
        })
        .await
        .map_err(ProbeError::from)?;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > until => return Err(e.into()),
            Err(_) => pause(cancel).await?,
        }
    }
}

impl Agent {
    /// Whether the service's dependencies are met; `Err` says which one is not.
    pub(crate) fn dependencies_met(
        &self,
        key: &ServiceKey,
        svc: &Service,
        rec: &DeploymentRecord,
    ) -> std::result::Result<(), Unmet> {
        for dep in &svc.depends {
            let dkey = key.sibling(&dep.service);
            let dsvc = rec.spec.services.get(&dep.service);
            let kind = dsvc.map_or(OwnerKind::Service, |s| s.kind.into());
            let running: Vec<_> = self
                .owned(&dkey, kind)?
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
                    .facts(&dkey)
                    .map(|f| f.job_state == Some(JobState::Succeeded))
                    .unwrap_or(false),
            };
            if !ok {
                return Err(Unmet::Dependency {
                    service: dep.service.clone(),
                    condition: dep.condition.as_str(),
                });
            }
        }
        Ok(())
    }

    /// Depends and init steps, before a service's first replica (of a version) starts.
    /// `Ok(false)` = not yet.
    pub(crate) async fn ready_to_start(
        self: &Arc<Self>,
        input: PassInput<'_>,
        hash: &str,
        st: &mut TaskState,
    ) -> Result<bool> {
        let PassInput { key, svc, env, rec } = input;
        if let Err(unmet) = self.dependencies_met(key, svc, rec) {
            self.report_unmet(key, svc, &unmet.to_string(), st);
            return Ok(false);
        }
        st.waiting_since = None;
        st.timed_out_reported = false;
        if st.init_done.as_deref() == Some(hash) || svc.init.is_empty() {
            return Ok(true);
        }
        for (i, step) in svc.init.iter().enumerate() {
            let what = format!("init step {} ({})", i + 1, step.action.name());
            self.services
                .set_view(key, ViewState::Starting, what.clone());
            if let Err(e) = self
                .run_init_step(key, svc, env, &step.action, &st.cancel)
                .await
            {
                if st.cancel.is_cancelled() {
                    return Ok(false);
                }
                let msg = format!("{what} failed: {e}");
                self.services
                    .events
                    .publish(self.event("init_failed", key).with("error", &msg));
                if step.on_failure == OnFailure::Fail {
                    self.services.set_view(key, ViewState::Error, msg);
                    let delay = st
                        .tracker(0)
                        .ended(Instant::now(), &svc.effective_restart().backoff);
                    tracing::warn!(deployment = %key.deployment, service = %key.service, "init failed; retrying in {delay:?}");
                    return Ok(false);
                }
            }
        }
        st.init_done = Some(hash.to_string());
        Ok(true)
    }

    /// Shows an unmet dependency: `waiting` until the longest dependency timeout has passed,
    /// then `error` (and one `dependency_timeout` event).
    fn report_unmet(&self, key: &ServiceKey, svc: &Service, msg: &str, st: &mut TaskState) {
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
                    .publish(self.event("dependency_timeout", key).with("error", msg));
            }
            self.services.set_view(
                key,
                ViewState::Error,
                format!("{msg} (timed out after {}s)", limit.as_secs()),
            );
        } else {
            self.services
                .set_view(key, ViewState::Waiting, msg.to_string());
        }
    }

    async fn run_init_step(
        self: &Arc<Self>,
        key: &ServiceKey,
        svc: &Service,
        env: &BTreeMap<String, String>,
        action: &InitAction,
        cancel: &Cancel,
    ) -> std::result::Result<(), InitError> {
        match action {
            InitAction::WaitTcp {
                host,
                port,
                timeout,
            } => wait_tcp(format!("{host}:{port}"), timeout.get(), cancel).await,
            InitAction::WaitHttp { url, timeout } => wait_http(url, timeout.get(), cancel).await,
            InitAction::Run { command, timeout } => {
                self.run_init_container(key, svc, env, command, timeout.get(), cancel)
                    .await
            }
        }
    }

    /// `run`: a one-off container of the service's image running `command`, removed after.
    async fn run_init_container(
        self: &Arc<Self>,
        key: &ServiceKey,
        svc: &Service,
        env: &BTreeMap<String, String>,
        command: &[String],
        timeout: Duration,
        cancel: &Cancel,
    ) -> std::result::Result<(), InitError> {
        let owner = Owner {
            deployment: key.deployment.clone(),
            service: key.service.clone(),
            replica: 0,
            spec_hash: String::new(),
            kind: OwnerKind::Init,
        };
        let mut req = build_request(key, svc, env, &owner)?;
        req.name = Some(format!(
            "{}-{}-init-{}",
            key.deployment,
            key.service,
            &crate::containers::names::new_id()?[..6]
        ));
        req.entrypoint = Some(command.to_vec());
        req.cmd = Vec::new();
        if cancel.is_cancelled() {
            return Err(InitError::Cancelled);
        }
        let c = self.create_container(req).await?;
        let waited = tokio::select! {
            w = tokio::time::timeout(timeout, self.wait_container(&c.id)) => Some(w),
            _ = cancel.cancelled() => None,
        };
        let result = match waited {
            None => Err(InitError::Cancelled),
            Some(Err(_)) => Err(InitError::RunTimeout(timeout.as_secs())),
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Ok(Ok(w))) if w.exit_code == 0 => Ok(()),
            Some(Ok(Ok(w))) => Err(InitError::Exited(w.exit_code)),
        };
        self.remove_one(&c.id).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_of_wait_steps() {
        assert_eq!(
            split_http_url("http://db:8080/ready").unwrap(),
            ("db".into(), 8080, "/ready".into())
        );
        assert_eq!(
            split_http_url("http://db").unwrap(),
            ("db".into(), 80, "/".into())
        );
        let e = split_http_url("https://db/").unwrap_err();
        assert_eq!(
            e.to_string(),
            "https://db/: only http:// URLs are supported"
        );
        let e = split_http_url("http://db:x/").unwrap_err();
        assert_eq!(e.to_string(), "http://db:x/: bad port");
    }
}

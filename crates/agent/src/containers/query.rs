//! Read-only views of containers: `ps`, `inspect`, `stats`, and the shim of a running one
//! (for `exec` and `attach`, see `session`). The state database and the shim are blocking:
//! the public calls run them on tokio's blocking pool, so no front end has to know.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zlayer_runtime::ContainerStats;
use zlayer_runtime::ShimClient;

use super::filter::ContainerFilter;
use super::record::{ContainerRecord, ContainerState};
use crate::error::{AgentError, Result};
use crate::Agent;

/// One line of `ps`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub command: String,
    pub created_at: String,
    pub state: ContainerState,
    /// Docker-style status text: `Up 3 seconds`, `Exited (7) 2 minutes ago`.
    pub status: String,
    pub exit_code: Option<i64>,
    /// Published ports, docker's form: `0.0.0.0:8080->80/tcp`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `starting`, `healthy` or `unhealthy` for service replicas with a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::services::HealthStatus>,
    /// The container's labels (`--label`), for `ps --format '{{.Labels}}'`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `inspect`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerDetails {
    #[serde(flatten)]
    pub record: ContainerRecord,
    /// The container's directory (bundle, rootfs mount, logs).
    pub path: String,
    pub log_path: String,
    /// The network sandbox: network, IP addresses, gateway, published ports.
    pub network: Option<crate::network::SandboxInfo>,
    /// The start-up recovery has not checked this container's shim yet: its state is the
    /// one recorded before the daemon restarted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovering: bool,
    /// Output the shim could not write to the log (a full disk): bytes dropped, failed
    /// writes, the last error. Absent when nothing was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<zlayer_runtime::logs::LogLoss>,
}

/// How long ago an RFC 3339 time was, as docker words it (`3 minutes`); empty when
/// `rfc3339` is absent or unreadable. Public for the CLI's `{{.RunningFor}}`.
pub fn ago(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return String::new();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 172_800 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

fn command_of(r: &ContainerRecord) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(ep) = r.spec.get("entrypoint").and_then(|v| v.as_array()) {
        parts.extend(ep.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    if let Some(cmd) = r.spec.get("cmd").and_then(|v| v.as_array()) {
        parts.extend(cmd.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    parts.join(" ")
}

impl Agent {
    /// `ps [-a] [--filter ...]`: running containers, or all with `all` or a `status`
    /// filter (as docker), that pass `filter`.
    pub async fn list_containers(
        self: &Arc<Self>,
        all: bool,
        filter: ContainerFilter,
    ) -> Result<Vec<ContainerSummary>> {
        self.run_blocking(move |a| a.container_summaries(all, &filter))
            .await
    }

    fn container_summaries(
        &self,
        all: bool,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerSummary>> {
        let all = all || filter.has_status();
        Ok(self
            .containers()
            .list()?
            .into_iter()
            .filter(|r| all || r.state == ContainerState::Running)
            .filter(|r| filter.matches(r))
            .map(|r| {
                let health = self
                    .services()
                    .health_of(&r.id)
                    .filter(|_| r.state == ContainerState::Running);
                let paused = self.is_paused(&r);
                let status = match r.state {
                    ContainerState::Running if paused => {
                        format!("Up {} (Paused)", ago(r.started_at.as_deref()))
                    }
                    ContainerState::Running | ContainerState::Paused => match health {
                        Some(h) => format!("Up {} ({})", ago(r.started_at.as_deref()), h.as_str()),
                        None => format!("Up {}", ago(r.started_at.as_deref())),
                    },
                    ContainerState::Created => "Created".to_string(),
                    ContainerState::Exited => format!(
                        "Exited ({}) {} ago",
                        r.exit_code.unwrap_or(-1),
                        ago(r.finished_at.as_deref())
                    ),
                };
                // The start-up recovery has not checked its shim yet: the state shown is the
                // one recorded before the restart.
                let status = if self.is_recovering(&r.id) {
                    format!("{status} (recovering)")
                } else {
                    status
                };
                let ports = self
                    .networking()
                    .sandbox(&r.id)
                    .map(|s| s.ports.iter().map(super::network::port_text).collect())
                    .unwrap_or_default();
                ContainerSummary {
                    ports,
                    command: command_of(&r),
                    id: r.id,
                    name: r.name,
                    image: r.image,
                    created_at: r.created_at,
                    state: if paused {
                        ContainerState::Paused
                    } else {
                        r.state
                    },
                    status,
                    exit_code: r.exit_code,
                    health,
                    labels: r.labels,
                }
            })
            .collect())
    }

    /// `inspect` (asks a running container's shim about lost log output).
    pub async fn inspect_container(self: &Arc<Self>, key: &str) -> Result<ContainerDetails> {
        let key = key.to_string();
        self.run_blocking(move |a| a.container_details(&key)).await
    }

    fn container_details(&self, key: &str) -> Result<ContainerDetails> {
        let mut record = self.containers().resolve(key)?;
        if self.is_paused(&record) {
            record.state = ContainerState::Paused;
        }
        let dir = self.container_dir(&record.id);
        let log_loss = ShimClient::for_container(&self.config().paths.state, &dir, &record.id)
            .log_loss(std::time::Duration::from_secs(1))
            .ok()
            .flatten()
            .filter(|l| l.dropped_bytes > 0 || l.failed_writes > 0);
        Ok(ContainerDetails {
            recovering: self.is_recovering(&record.id),
            log_loss,
            network: self.networking().sandbox(&record.id),
            path: dir.display().to_string(),
            log_path: zlayer_runtime::logs::log_path(&dir).display().to_string(),
            record,
        })
    }

    /// `stats --no-stream`: the container's resource usage now, from its cgroup.
    pub async fn container_stats(self: &Arc<Self>, key: &str) -> Result<ContainerStats> {
        let key = key.to_string();
        self.run_blocking(move |a| a.read_container_stats(&key))
            .await
    }

    fn read_container_stats(&self, key: &str) -> Result<ContainerStats> {
        let r = self.containers().resolve(key)?;
        if self.is_recovering(&r.id) {
            return Err(AgentError::conflict(format!(
                "container {} is still being recovered after the daemon's restart; try again",
                r.name
            )));
        }
        if r.state != ContainerState::Running {
            return Err(AgentError::conflict(format!(
                "container {} is not running",
                r.name
            )));
        }
        let config = self.container_dir(&r.id).join("config.json");
        let spec: serde_json::Value = std::fs::read(&config)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| AgentError::internal(format!("cannot read {}", config.display())))?;
        let cgroups_path = spec["linux"]["cgroupsPath"].as_str().ok_or_else(|| {
            AgentError::internal(format!("{} names no linux.cgroupsPath", config.display()))
        })?;
        zlayer_runtime::read_stats(cgroups_path)
            .map_err(|e| AgentError::internal(e.to_string()).with_source(e))
    }

    /// The shim client of a running container, for `exec` and `attach`.
    pub(crate) fn running_shim(&self, key: &str) -> Result<(ContainerRecord, ShimClient)> {
        let r = self.containers().resolve(key)?;
        if self.is_recovering(&r.id) {
            return Err(AgentError::conflict(format!(
                "container {} is still being recovered after the daemon's restart; try again",
                r.name
            )));
        }
        if r.state != ContainerState::Running {
            return Err(AgentError::conflict(format!(
                "container {} is not running",
                r.name
            )));
        }
        self.refuse_if_paused(&r, "unpause it first")?;
        let client = ShimClient::for_container(
            &self.config().paths.state,
            &self.container_dir(&r.id),
            &r.id,
        );
        Ok((r, client))
    }
}

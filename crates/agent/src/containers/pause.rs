//! `pause` and `unpause`: the container's cgroup frozen or thawed (the runtime's
//! `cgroups::freezer` does the writes). Whether a container is paused is read from its
//! cgroup, never stored: the kernel keeps a frozen cgroup frozen across a daemon restart,
//! so a paused container is still paused after one, and `ps`/`inspect` cannot disagree
//! with what the processes really are.
//!
//! Docker's rules for the other verbs on a paused container live with those verbs: `stop`
//! and `kill` thaw it first, `rm` refuses it without `-f`, `exec` and `attach` refuse it.

use std::sync::Arc;

use zlayer_runtime::cgroups::ContainerCgroup;
use zlayer_runtime::orphan;

use super::record::{ContainerRecord, ContainerState};
use crate::error::{AgentError, Result};
use crate::services::events::Event;
use crate::Agent;

impl Agent {
    /// `pause`: freezes every process of a running container.
    pub async fn pause_container(self: &Arc<Self>, key: &str) -> Result<()> {
        self.set_paused(key, true).await
    }

    /// `unpause`: thaws a paused container.
    pub async fn unpause_container(self: &Arc<Self>, key: &str) -> Result<()> {
        self.set_paused(key, false).await
    }

    async fn set_paused(self: &Arc<Self>, key: &str, paused: bool) -> Result<()> {
        let r = self.containers().resolve(key)?;
        self.await_recovered(&r).await?;
        let key = r.id.clone();
        self.run_blocking(move |a| {
            let r = a.containers().resolve(&key)?;
            if r.state != ContainerState::Running {
                return Err(AgentError::conflict(format!(
                    "container {} is not running",
                    r.name
                )));
            }
            let cgroup = a.container_cgroup(&r)?;
            match (paused, cgroup.is_frozen()) {
                (true, true) => Err(AgentError::conflict(format!(
                    "container {} is already paused",
                    r.name
                ))),
                (false, false) => Err(AgentError::conflict(format!(
                    "container {} is not paused",
                    r.name
                ))),
                _ => {
                    cgroup.set_frozen(paused).map_err(|e| {
                        AgentError::internal(format!("container {}: {e}", r.name)).with_source(e)
                    })?;
                    let verb = if paused { "paused" } else { "unpaused" };
                    tracing::info!(name = %r.name, "container {verb}");
                    // docker's event actions: `pause`, `unpause`.
                    let action = if paused { "pause" } else { "unpause" };
                    a.services
                        .events
                        .publish(Event::new("container", action, &r.id, &r.name));
                    Ok(())
                }
            }
        })
        .await
    }

    /// The cgroup of a container, from the `linux.cgroupsPath` of its bundle.
    pub(crate) fn container_cgroup(&self, r: &ContainerRecord) -> Result<ContainerCgroup> {
        let dir = self.container_dir(&r.id);
        let path = orphan::cgroups_path(&dir).ok_or_else(|| {
            AgentError::internal(format!(
                "container {}: {} names no linux.cgroupsPath",
                r.name,
                dir.join("config.json").display()
            ))
        })?;
        Ok(ContainerCgroup::new(&path))
    }

    /// Whether a container is paused: running, with its cgroup frozen.
    pub(crate) fn is_paused(&self, r: &ContainerRecord) -> bool {
        r.state == ContainerState::Running
            && self.container_cgroup(r).is_ok_and(|cg| cg.is_frozen())
    }

    /// Thaws a paused container so that a signal can act on it (`stop`, `kill`, `rm -f`,
    /// as docker does); nothing when it is not paused.
    pub(crate) async fn thaw_if_paused(&self, r: &ContainerRecord) -> Result<()> {
        if r.state != ContainerState::Running {
            return Ok(());
        }
        let Ok(cgroup) = self.container_cgroup(r) else {
            return Ok(());
        };
        let name = r.name.clone();
        tokio::task::spawn_blocking(move || {
            if cgroup.is_frozen() {
                cgroup.set_frozen(false).map_err(|e| {
                    AgentError::internal(format!("container {name}: cannot unpause it: {e}"))
                        .with_source(e)
                })?;
            }
            Ok(())
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
    }

    /// Refuses a verb docker refuses on a paused container (`exec`, `attach`, `rm`).
    pub(crate) fn refuse_if_paused(&self, r: &ContainerRecord, what: &str) -> Result<()> {
        if self.is_paused(r) {
            return Err(AgentError::conflict(format!(
                "container {} is paused: {what}",
                r.name
            )));
        }
        Ok(())
    }
}

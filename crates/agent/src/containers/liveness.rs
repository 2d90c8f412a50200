//! Keeping track of each container's shim: noticing at once when one dies, acting on a
//! container whose shim does not answer, and the containers still being recovered after a
//! daemon restart.
//!
//! A shim's death is seen through a pidfd polled on tokio's reactor (no thread per
//! container): a shim that exits leaves its exit record first, so a shim gone without one was
//! killed or crashed. What its container still runs is then killed through the cgroup, the
//! cgroup removed in every hierarchy, and the exit recorded as "shim lost" (137), which the
//! services supervisor sees like any other exit.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use zlayer_runtime::orphan::{self, Pidfd};
use zlayer_runtime::{read_exit_record, ExitRecord};
use zlayer_runtime::{ClientError, ShimClient};

use super::record::{short_id, ContainerRecord};
use crate::error::{AgentError, Result};
use crate::Agent;

/// How long a call on a container still being recovered waits for the recovery.
const RECOVERY_WAIT: Duration = Duration::from_secs(60);

/// The daemon's view of the shims it watches.
#[derive(Default)]
pub(crate) struct Liveness {
    /// Pidfds of watched shims, to kill an unresponsive shim without hitting a process that
    /// reused its pid.
    shims: Mutex<HashMap<String, Arc<Pidfd>>>,
    /// Containers whose shim the start-up recovery has not checked yet.
    recovering: Mutex<HashSet<String>>,
    /// Signalled whenever a container leaves `recovering`.
    recovered: Notify,
    /// Attached `run --rm` containers whose client went with the previous daemon: removed
    /// as soon as they end, as no client will come for their exit code.
    clients_gone: Mutex<HashSet<String>>,
}

impl Liveness {
    pub(crate) fn is_recovering(&self, id: &str) -> bool {
        self.recovering.lock().contains(id)
    }

    pub(crate) fn mark_recovering(&self, ids: impl IntoIterator<Item = String>) {
        self.recovering.lock().extend(ids);
    }

    pub(crate) fn forget_client(&self, id: &str) {
        self.clients_gone.lock().insert(id.to_string());
    }

    /// True when the client attached to `id` went with an earlier daemon.
    pub(crate) fn client_gone(&self, id: &str) -> bool {
        self.clients_gone.lock().contains(id)
    }

    /// The container is gone: nothing to remember about it.
    pub(crate) fn forget(&self, id: &str) {
        self.clients_gone.lock().remove(id);
    }

    pub(crate) fn done_recovering(&self, id: &str) {
        if self.recovering.lock().remove(id) {
            self.recovered.notify_waiters();
        }
    }
}

/// A pidfd shared with the registry, as tokio's `AsyncFd` wants an owner of the descriptor.
struct SharedPidfd(Arc<Pidfd>);

impl AsRawFd for SharedPidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// How a watched shim ended.
enum ShimEnd {
    /// It wrote the container's exit record.
    Exited(ExitRecord),
    /// It is gone without one.
    Lost(String),
    /// It ended and the container directory went with a removal meanwhile: nothing to do.
    Removed,
}

/// Waits for the end of the shim: its `wait` answer, or its death (pidfd readable).
async fn watch_shim(
    client: &ShimClient,
    container_dir: &std::path::Path,
    pidfd: Option<Arc<Pidfd>>,
) -> ShimEnd {
    // A shim writes the record before it exits: none means it did not end normally, unless
    // the container was removed (its directory moved away) meanwhile.
    let after_death = || match read_exit_record(container_dir).ok().flatten() {
        Some(rec) => ShimEnd::Exited(rec),
        None if !container_dir.exists() => ShimEnd::Removed,
        None => ShimEnd::Lost("it was killed or crashed".into()),
    };
    let afd = pidfd.and_then(|p| {
        // SAFETY: the descriptor is a pidfd owned by the `Arc` this `AsyncFd` holds: open
        // and the same for the `AsyncFd`'s whole life, and `as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(SharedPidfd(p), Interest::READABLE) }.ok()
    });
    let Some(afd) = afd else {
        return match client.wait_async().await {
            Ok(rec) => ShimEnd::Exited(rec),
            Err(ClientError::Lost(_)) => ShimEnd::Lost("it exited without an exit record".into()),
            Err(e) => ShimEnd::Lost(format!("waiting for it failed: {e}")),
        };
    };
    let died = || async {
        let _ = afd.readable().await;
    };
    tokio::select! {
        // The shim's own answer first when both are ready: it carries the exit.
        biased;
        r = client.wait_async() => match r {
            Ok(rec) => ShimEnd::Exited(rec),
            Err(e) => {
                // No answer from its socket: only its death tells now.
                if !matches!(e, ClientError::Lost(_)) {
                    tracing::debug!("waiting on the shim's socket: {e}; watching its process");
                }
                died().await;
                after_death()
            }
        },
        _ = died() => after_death(),
    }
}

impl Agent {
    /// Waits in the background for a running container to exit (its shim's answer) or for
    /// its shim to die (`shim_pid`, 0 when unknown), then records the exit and, for `--rm`,
    /// removes it.
    pub(crate) fn watch_container(self: &Arc<Self>, id: String, shim_pid: i32) {
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            // On the reactor, not the blocking pool: one watcher per running container must
            // not cost a thread each (a service of 100 replicas would hold 100 threads).
            let client = agent.shim_client(&id);
            let dir = agent.container_dir(&id);
            let pidfd = match Pidfd::open(shim_pid) {
                Ok(fd) => {
                    let fd = Arc::new(fd);
                    agent
                        .liveness
                        .shims
                        .lock()
                        .insert(id.clone(), Arc::clone(&fd));
                    Some(fd)
                }
                Err(e) => {
                    if shim_pid > 0 {
                        tracing::debug!(id = %short_id(&id), "no pidfd for shim {shim_pid}: {e}");
                    }
                    None
                }
            };
            let end = watch_shim(&client, &dir, pidfd).await;
            agent.liveness.shims.lock().remove(&id);
            match end {
                ShimEnd::Exited(rec) => {
                    if let Err(e) = agent.record_exit(&id, &rec).await {
                        tracing::warn!(id = %short_id(&id), "recording exit: {e}");
                    }
                }
                ShimEnd::Lost(why) => agent.shim_lost(&id, &why).await,
                ShimEnd::Removed => {}
            }
        });
    }

    /// The shim of `id` is gone without an exit record: kill what the container still runs,
    /// remove its cgroup everywhere, record the exit (137, "shim lost") and let the
    /// supervisor replace a service replica.
    pub(crate) async fn shim_lost(self: &Arc<Self>, id: &str, why: &str) {
        if self.containers().get(id).ok().flatten().is_none() {
            return;
        }
        tracing::warn!(id = %short_id(id), "the container's shim is gone ({why}): killing what it ran and removing its cgroup");
        let dir = self.container_dir(id);
        let state = self.config().paths.state.clone();
        let cid = id.to_string();
        let why = why.to_string();
        let reaped =
            tokio::task::spawn_blocking(move || orphan::reap_lost_shim(&dir, &state, &cid, &why))
                .await;
        let (rec, cleaned) = match reaped {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(id = %short_id(id), "cleaning up after a lost shim: {e}");
                return;
            }
        };
        if let Err(e) = cleaned {
            tracing::warn!(id = %short_id(id), "cleaning up after a lost shim: {e}");
        }
        if let Err(e) = self.record_exit(id, &rec).await {
            tracing::warn!(id = %short_id(id), "recording exit: {e}");
        }
        self.services().wake();
    }

    /// SIGKILLs the shim of `id` if it is watched (an unresponsive shim of a container being
    /// removed must not linger).
    pub(crate) fn kill_shim(&self, id: &str) {
        let fd = self.liveness.shims.lock().get(id).cloned();
        if let Some(fd) = fd {
            if let Err(e) = fd.send_signal(libc::SIGKILL) {
                tracing::debug!(id = %short_id(id), "killing the shim: {e}");
            }
        }
    }

    /// Waits until the start-up recovery has checked container `id` (a no-op once it has).
    pub(crate) async fn await_recovered(&self, r: &ContainerRecord) -> Result<()> {
        let deadline = tokio::time::Instant::now() + RECOVERY_WAIT;
        loop {
            let notified = self.liveness.recovered.notified();
            if !self.liveness.is_recovering(&r.id) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(AgentError::conflict(format!(
                    "container {} is still being recovered after the daemon's restart; try again",
                    r.name
                )));
            }
        }
    }

    /// Whether the start-up recovery is still checking container `id`.
    pub fn is_recovering(&self, id: &str) -> bool {
        self.liveness.is_recovering(id)
    }

    /// `stop` of a container whose shim does not answer (or is gone): the stop signal to its
    /// init through the cgroup, the grace period, SIGKILL to every member. Says so in the
    /// log and in the recorded exit.
    pub(crate) async fn stop_without_shim(
        &self,
        r: &ContainerRecord,
        signal: i32,
        grace: Duration,
        why: &ClientError,
    ) -> Result<ExitRecord> {
        tracing::warn!(id = %short_id(&r.id), name = %r.name, "{why}: stopping the container by signalling its cgroup directly");
        let dir = self.container_dir(&r.id);
        let init = r.pid.and_then(|p| i32::try_from(p).ok());
        let code = tokio::task::spawn_blocking(move || {
            let path = orphan::cgroups_path(&dir)
                .ok_or_else(|| format!("no cgroup is known for {}", dir.display()))?;
            orphan::stop(&path, signal, init, grace).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(|e| AgentError::internal(format!("stopping {} without its shim: {e}", r.name)))?;
        Ok(ExitRecord {
            exit_code: code,
            signal: Some(code - 128),
            oom_killed: false,
            pid: init,
            started_at: None,
            finished_at: chrono::Utc::now(),
            error: Some(format!("stopped through its cgroup: {why}")),
        })
    }

    /// `kill` of a container whose shim does not answer: the signal goes to its init (or, if
    /// that is gone, to every process of its cgroup) directly.
    pub(crate) async fn kill_without_shim(
        &self,
        r: &ContainerRecord,
        signal: i32,
        why: &ClientError,
    ) -> Result<()> {
        tracing::warn!(id = %short_id(&r.id), name = %r.name, "{why}: sending signal {signal} through the container's cgroup directly");
        let dir = self.container_dir(&r.id);
        let init = r.pid.and_then(|p| i32::try_from(p).ok());
        let sent = tokio::task::spawn_blocking(move || {
            orphan::cgroups_path(&dir).map_or(0, |p| orphan::signal(&p, signal, init))
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?;
        if sent == 0 {
            return Err(AgentError::conflict(format!(
                "container {} is not running",
                r.name
            )));
        }
        Ok(())
    }

    /// The last step before a container's record goes: no process of it may live on, and its
    /// cgroup goes in every hierarchy, whatever became of its shim. Cheap when the shim
    /// already did it (a few `rmdir`s of directories that no longer exist).
    pub(crate) async fn kill_and_remove_cgroup(&self, r: &ContainerRecord) -> Result<()> {
        let dir = self.container_dir(&r.id);
        tokio::task::spawn_blocking(move || match orphan::cgroups_path(&dir) {
            Some(p) => orphan::kill_and_remove(&p),
            None => Ok(()),
        })
        .await
        .map_err(|e| AgentError::internal(e.to_string()))?
        .map_err(|e| AgentError::internal(format!("cannot remove container {}: {e}", r.name)))
    }
}

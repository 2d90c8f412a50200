//! Creating, starting, stopping and removing containers. The daemon never calls libcontainer:
//! each container gets a shim process (zlayer-runtime), and the agent talks to it over its socket.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zlayer_runtime::ExitRecord;
use zlayer_runtime::{self as shim, ClientError, LaunchRequest, Launched, ShimClient, ShimStatus};

use super::names::{generated_name, new_id, validate_name};
use super::network::PendingNetwork;
use super::record::{short_id, ContainerRecord, ContainerState};
use super::request::{to_run_options, CreateRequest};
use crate::error::{AgentError, Result};
use crate::Agent;

/// Default grace period of `stop`, as docker.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// How long an attached `run --rm` container waits for its client's `wait` before it is
/// removed anyway.
const ATTACHED_REMOVE_FALLBACK: Duration = Duration::from_secs(60);

/// How many containers the start-up recovery checks at a time.
const RECOVERY_PARALLELISM: usize = 32;

/// What `create` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    pub id: String,
    pub name: String,
}

/// What `wait` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WaitResult {
    pub exit_code: i64,
    pub oom_killed: bool,
    pub error: Option<String>,
}

/// The agent's error for a failed call to a shim, the same whichever operation or door
/// asked: a container that is not running is a conflict (as the check before each call says),
/// a bundle the request made impossible or an exec'd process that could not start is the
/// caller's input, anything else is the agent's. Each carries the status a CLI exits with
/// (docker's: 125 unless the process said 126 or 127) and keeps the shim error as its source.
pub(super) fn runtime_err(e: ClientError) -> AgentError {
    let code = e.exit_code();
    let kind = match &e {
        ClientError::NotRunning(_) => crate::ErrorKind::Conflict,
        ClientError::Bundle(_) | ClientError::Exec { .. } => crate::ErrorKind::InvalidInput,
        _ => crate::ErrorKind::Internal,
    };
    AgentError::new(kind, e.to_string())
        .with_exit_code(Some(code))
        .with_source(e)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Agent {
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.config().paths.containers().join(id)
    }

    pub(crate) fn shim_client(&self, id: &str) -> ShimClient {
        ShimClient::for_container(&self.config().paths.state, &self.container_dir(id), id)
    }

    fn shim_command(&self) -> Vec<OsString> {
        self.config()
            .shim_command
            .iter()
            .map(|p| p.clone().into_os_string())
            .collect()
    }

    /// Creates and starts a container (`run`). Pulls the image first when it is missing.
    /// On failure nothing is left behind: no record, mount, directory or shim.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn create_container(self: &Arc<Self>, req: CreateRequest) -> Result<Created> {
        if req.image.trim().is_empty() {
            return Err(AgentError::invalid("no image given"));
        }
        // Refused before any work (a pull, a mount); checked again when the record is
        // inserted, where concurrent creates cannot pass it together.
        let max_containers = self.config().file.limits.max_containers;
        if self.containers().count()? >= max_containers {
            return Err(crate::limits::too_many_containers(max_containers));
        }
        // The shim's cgroup write comes ~8 ms from now; start the kernel's grace period now.
        zlayer_runtime::cgroups::attach_lock::warm_in_background();
        let id = new_id()?;
        let name = match &req.name {
            Some(n) => {
                validate_name(n)?;
                n.clone()
            }
            None => self.free_generated_name(&id)?,
        };
        let mut options = to_run_options(&req, &self.config().paths.volumes())?;
        let image = self.image_for_run(&req.image, req.pull.as_deref()).await?;
        let record = new_record(&id, &name, &req, &image.id);
        self.containers().insert_limited(&record, max_containers)?;
        // The network namespace exists before the container is created in it. A bridge
        // network's CNI ADD (tens of milliseconds of plugin execs) then runs while the
        // container is being created (overlay mount, bundle, shim, libcontainer create); the
        // shim waits at its start gate and starts the process only after the ADD succeeded.
        let (pending, has_sandbox) = match self.prepare_sandbox(&id, &req, &mut options).await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.containers().delete(&id);
                return Err(e);
            }
        };
        let (gate_r, gate_w) = match &pending {
            Some(_) => match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                Ok((r, w)) => (Some(r), Some(w)),
                Err(e) => {
                    self.detach_network(&id, &name).await;
                    let _ = self.containers().delete(&id);
                    return Err(AgentError::internal(format!("start gate pipe: {e}")));
                }
            },
            None => (None, None),
        };

        let agent = Arc::clone(self);
        let launch_id = id.clone();
        let launching = tokio::task::spawn_blocking(move || {
            let dir = agent.container_dir(&launch_id);
            let shim_cmd = agent.shim_command();
            shim::launch(&LaunchRequest {
                id: &launch_id,
                container_dir: &dir,
                state_dir: &agent.config().paths.state,
                layers: &image.layers,
                image: &image.config,
                options: &options,
                shim_cmd: &shim_cmd,
                log_max_size: zlayer_runtime::logs::DEFAULT_MAX_SIZE,
                log_max_files: zlayer_runtime::logs::DEFAULT_MAX_FILES,
                start_gate: gate_r.as_ref().map(|fd| fd.as_fd()),
            })
        });
        let attach_err = match pending {
            Some(p) => attach_then_open_gate(p, gate_w).await.err(),
            None => None,
        };
        let launched = launching
            .await
            .map_err(|e| AgentError::internal(format!("container start task failed: {e}")))?;

        let outcome = match (launched, attach_err) {
            (Ok(l), None) => Ok(l),
            // The network's error explains the cancelled start.
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(runtime_err(e)),
        };
        let launched = match outcome {
            Ok(l) => l,
            Err(e) => {
                if has_sandbox {
                    self.detach_network(&id, &name).await;
                }
                let _ = self.containers().delete(&id);
                return Err(e);
            }
        };
        self.register_dns(&id, &name);
        self.mark_running(record, &launched)?;
        tracing::info!(id = %short_id(&id), %name, image = %req.image, "container started");
        Ok(Created { id, name })
    }

    /// The container's network sandbox, before it is created: `(a network still to attach
    /// while the container is created, whether a sandbox exists to release on failure)`.
    async fn prepare_sandbox(
        &self,
        id: &str,
        req: &CreateRequest,
        options: &mut zlayer_runtime::RunOptions,
    ) -> Result<(Option<PendingNetwork>, bool)> {
        Ok(match self.prepare_network(id, req, options).await? {
            Some(p) if p.needs_attach() => (Some(p), true),
            Some(p) => {
                // A shared namespace: nothing to attach, only the record to complete.
                p.attach().await?;
                (None, true)
            }
            None => (None, false),
        })
    }

    /// The launched container's record: running, with its pid and start time; its shim
    /// watched from now on.
    fn mark_running(
        self: &Arc<Self>,
        mut record: ContainerRecord,
        launched: &Launched,
    ) -> Result<()> {
        record.state = ContainerState::Running;
        record.pid = Some(i64::from(launched.handle.init_pid));
        record.started_at = Some(
            launched
                .handle
                .started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        );
        self.containers().update(&record)?;
        self.watch_container(record.id.clone(), launched.handle.shim_pid);
        Ok(())
    }

    fn free_generated_name(&self, id: &str) -> Result<String> {
        let base = generated_name(id);
        if self.containers().by_name(&base)?.is_none() {
            return Ok(base);
        }
        for n in 2..1000 {
            let candidate = format!("{base}_{n}");
            if self.containers().by_name(&candidate)?.is_none() {
                return Ok(candidate);
            }
        }
        Ok(format!("{base}_{}", short_id(id)))
    }

    /// Writes the exit into the container's record unless it is there already; returns the
    /// record as it is now (`None`: the container was removed meanwhile).
    #[tracing::instrument(level = "debug", skip_all)]
    fn store_exit(&self, id: &str, rec: &ExitRecord) -> Result<Option<ContainerRecord>> {
        let Some(mut r) = self.containers().get(id)? else {
            return Ok(None);
        };
        if r.state == ContainerState::Exited {
            return Ok(Some(r));
        }
        r.state = ContainerState::Exited;
        r.exit_code = Some(i64::from(rec.exit_code));
        r.oom_killed = rec.oom_killed;
        r.error = rec.error.clone();
        r.finished_at = Some(
            rec.finished_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        );
        if self.containers().mark_exited(&r)? {
            self.release_network(id, &r.name);
            tracing::info!(id = %short_id(id), exit_code = rec.exit_code, oom = rec.oom_killed, "container exited");
            Ok(Some(r))
        } else {
            // Recorded by someone else between our read and our write: theirs stands.
            self.containers().get(id)
        }
    }

    pub(crate) async fn record_exit(self: &Arc<Self>, id: &str, rec: &ExitRecord) -> Result<()> {
        let Some(r) = self.store_exit(id, rec)? else {
            return Ok(());
        };
        if r.auto_remove {
            let result = WaitResult {
                exit_code: r.exit_code.unwrap_or(-1),
                oom_killed: r.oom_killed,
                error: r.error.clone(),
            };
            self.remember_exit(&r.id, &r.name, result);
            let attached = r
                .spec
                .get("attached")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if attached && !self.liveness.client_gone(id) {
                // The attached client's `wait` removes it once it has the output and the
                // exit code; this is the fallback for a client that went away.
                let agent = Arc::clone(self);
                let id = id.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(ATTACHED_REMOVE_FALLBACK).await;
                    let _ = agent.remove_container(&id, true).await;
                });
            } else {
                self.remove_container(id, true).await?;
            }
        }
        Ok(())
    }

    /// Re-adopts containers after a daemon (re)start: running ones get a watcher again, ones
    /// that ended meanwhile get their real exit record, ones whose shim is gone are cleaned up
    /// and recorded as lost, and `--rm` ones that ended are removed, as docker does.
    ///
    /// Returns at once: the checks run in the background, several at a time (a lost shim
    /// costs seconds of waiting for an exit record), so the API listens meanwhile; until its
    /// check is done a container shows as recovering and calls on it wait for the check.
    pub async fn recover_containers(self: &Arc<Self>) -> Result<()> {
        let records: Vec<ContainerRecord> = self
            .containers()
            .list()?
            .into_iter()
            .filter(|r| r.state != ContainerState::Exited || r.auto_remove)
            .collect();
        self.liveness
            .mark_recovering(records.iter().map(|r| r.id.clone()));
        let limit = Arc::new(tokio::sync::Semaphore::new(RECOVERY_PARALLELISM));
        for r in records {
            let agent = Arc::clone(self);
            let limit = Arc::clone(&limit);
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                let id = r.id.clone();
                if let Err(e) = agent.recover_container(r).await {
                    tracing::warn!(id = %short_id(&id), "recovering container: {e}");
                }
                agent.liveness.done_recovering(&id);
            });
        }
        Ok(())
    }

    /// Recovery of one container (see [`recover_containers`](Self::recover_containers)).
    async fn recover_container(self: &Arc<Self>, r: ContainerRecord) -> Result<()> {
        // No client outlives the daemon it was attached to: an attached `run --rm` that
        // ends from now on is removed at once, not after waiting for that client.
        if r.auto_remove {
            self.liveness.forget_client(&r.id);
        }
        if r.state == ContainerState::Exited {
            // `--rm`: ended before the previous daemon could remove it.
            self.liveness.done_recovering(&r.id);
            return self.remove_container(&r.id, true).await;
        }
        let client = self.shim_client(&r.id);
        let status = tokio::task::spawn_blocking(move || client.status())
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?;
        // From here on the normal paths (watcher, exit, removal) take over.
        self.liveness.done_recovering(&r.id);
        match status {
            Ok(ShimStatus::Running {
                pid,
                started_at,
                shim_pid,
            }) => {
                if r.state != ContainerState::Running {
                    // The previous daemon died while it launched this container: the shim
                    // went on and started it, but the record still says `created`. As
                    // such it would count as not running, and removing it would leave
                    // its shim and process behind.
                    let mut r = r.clone();
                    r.state = ContainerState::Running;
                    r.pid = Some(i64::from(pid));
                    r.started_at =
                        Some(started_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
                    self.containers().update(&r)?;
                    self.register_dns(&r.id, &r.name);
                }
                tracing::info!(id = %short_id(&r.id), name = %r.name, "re-adopted running container");
                self.watch_container(r.id.clone(), shim_pid);
            }
            Ok(ShimStatus::Exited(rec)) => {
                // Its shim ended while no daemon ran; should its clean-up have failed (a full
                // disk), the cgroup goes now.
                if let Err(e) = self.kill_and_remove_cgroup(&r).await {
                    tracing::warn!(id = %short_id(&r.id), "{e}");
                }
                self.record_exit(&r.id, &rec).await?;
            }
            Err(e @ ClientError::Unresponsive { .. }) => {
                // A stopped shim: its container may well run. Watched through its socket
                // (no pid is known); stop, kill and rm work through the cgroup meanwhile.
                tracing::warn!(id = %short_id(&r.id), "re-adopting container: {e}");
                self.watch_container(r.id.clone(), 0);
            }
            Err(e) => {
                // No shim and no exit record: killed while the daemon was down, or it never
                // started (the daemon died mid-create).
                self.shim_lost(&r.id, &format!("found gone at start-up: {e}"))
                    .await;
            }
        }
        Ok(())
    }

    /// `stop`: the stop signal, `timeout` seconds of grace, then SIGKILL.
    pub async fn stop_container(&self, key: &str, timeout: Option<u64>) -> Result<()> {
        let r = self.containers().resolve(key)?;
        self.await_recovered(&r).await?;
        let r = self.containers().resolve(&r.id)?;
        if r.state != ContainerState::Running {
            return Ok(());
        }
        // A paused container is thawed first, so that its stop signal can be handled.
        self.thaw_if_paused(&r).await?;
        let signal = self.stop_signal(&r);
        let grace = Duration::from_secs(timeout.unwrap_or(DEFAULT_STOP_TIMEOUT));
        let client = self.shim_client(&r.id);
        let stopped = tokio::task::spawn_blocking(move || client.stop(grace, signal))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?;
        let rec = match stopped {
            Ok(rec) => rec,
            Err(e @ (ClientError::Unresponsive { .. } | ClientError::Lost(_))) => {
                self.stop_without_shim(&r, signal, grace, &e).await?
            }
            Err(e) => return Err(runtime_err(e)),
        };
        // Recorded before answering, so a `stop` followed by `ps -a` or `inspect` shows
        // the exit code (the watcher may not have got to it yet).
        self.store_exit(&r.id, &rec)?;
        Ok(())
    }

    /// The first half of `stop`: sends the container's stop signal and returns. The
    /// supervisor signals every replica it removes before it waits for any (see
    /// `remove_replicas`), so that they shut down together.
    pub(crate) async fn signal_stop(&self, key: &str) -> Result<()> {
        let r = self.containers().resolve(key)?;
        if r.state != ContainerState::Running {
            return Ok(());
        }
        self.thaw_if_paused(&r).await?;
        let signal = self.stop_signal(&r);
        let client = self.shim_client(&r.id);
        match tokio::task::spawn_blocking(move || client.kill(signal, false))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?
        {
            Ok(()) | Err(ClientError::NotRunning(_)) => Ok(()),
            Err(e) => Err(runtime_err(e)),
        }
    }

    fn stop_signal(&self, r: &ContainerRecord) -> i32 {
        let from_request = r
            .spec
            .get("stop_signal")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let from_image = self.image_stop_signal(&r.image_id);
        from_request
            .or(from_image)
            .and_then(|s| zlayer_runtime::parse_signal(&s))
            .unwrap_or(15)
    }

    /// `kill -s SIG`.
    pub async fn kill_container(&self, key: &str, signal: Option<&str>) -> Result<()> {
        let r = self.containers().resolve(key)?;
        self.await_recovered(&r).await?;
        let r = self.containers().resolve(&r.id)?;
        let sig = match signal {
            None => 9,
            Some(s) => zlayer_runtime::parse_signal(s)
                .ok_or_else(|| AgentError::invalid(format!("invalid signal {s:?}")))?,
        };
        if r.state != ContainerState::Running {
            return Err(AgentError::conflict(format!(
                "container {} is not running",
                r.name
            )));
        }
        // As docker: a paused container is thawed, so the signal is delivered (and handled).
        self.thaw_if_paused(&r).await?;
        let client = self.shim_client(&r.id);
        let killed = tokio::task::spawn_blocking(move || client.kill(sig, false))
            .await
            .map_err(|e| AgentError::internal(e.to_string()))?;
        match killed {
            Err(e @ ClientError::Unresponsive { .. }) => self.kill_without_shim(&r, sig, &e).await,
            other => other.map_err(runtime_err),
        }
    }

    /// `rm [-f]`: unmounts and deletes everything of the container.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let r = self.containers().resolve(key)?;
        self.await_recovered(&r).await?;
        let r = self.containers().resolve(&r.id)?;
        self.check_no_sharers(&r)?;
        // A shim may live on while the record says otherwise (a daemon killed mid-launch, its
        // recovery racing the shim's start): whenever its socket exists, it is stopped too, so
        // no shim or process outlives its record.
        let shim_socket = zlayer_runtime::shim::socket_path(&self.config().paths.state, &r.id);
        if r.state == ContainerState::Running || shim_socket.exists() {
            if !force {
                self.refuse_if_paused(
                    &r,
                    "cannot remove it; unpause and stop it first, or use rm -f",
                )?;
            }
            if !force && r.state == ContainerState::Running {
                return Err(AgentError::conflict(format!(
                    "cannot remove container {}: it is running; stop it first or use rm -f",
                    r.name
                )));
            }
            // `rm -f` of a paused container: thawed, so the SIGKILL below ends it at once.
            self.thaw_if_paused(&r).await?;
            let client = self.shim_client(&r.id);
            let stopped = tokio::task::spawn_blocking(move || client.stop(Duration::ZERO, 9)).await;
            if let Ok(Err(e @ ClientError::Unresponsive { .. })) = stopped {
                // Killed through the cgroup below; the shim itself must not linger either.
                tracing::warn!(id = %short_id(&r.id), name = %r.name, "{e}: killing the container through its cgroup, and its shim");
                self.kill_shim(&r.id);
            }
        }
        // Whatever became of the shim, no process of the container outlives its record, and
        // its cgroup goes in every hierarchy; when a process survives SIGKILL the record
        // stays and the error says so.
        self.kill_and_remove_cgroup(&r).await?;
        // Its DNS name now, its sandbox in the background (a no-op when its exit released it).
        self.release_network(&r.id, &r.name);
        // Out of `containers/` now; unmounted and deleted in the background (see trash.rs).
        let purge = self.discard_container_dir(&r.id, &r.name).await?;
        match self.containers().delete(&r.id) {
            // The disk is full, and the database's reserve was used up already (by whatever
            // keeps filling it): this container's own files are the space to free. Its
            // directory is out of `containers/` already; once it is deleted, try again.
            Err(e) if crate::db::is_disk_full(&e) => {
                let Some(purge) = purge else { return Err(e) };
                tracing::warn!(name = %r.name, "{e}: freeing the container's files first");
                let _ = purge.await;
                self.containers().delete(&r.id)?;
            }
            res => res?,
        }
        self.liveness.forget(&r.id);
        tracing::info!(id = %short_id(&r.id), name = %r.name, "container removed");
        Ok(())
    }

    /// `wait`: blocks until the container exits; returns its exit code. For `--rm`
    /// containers it also waits until the removal is done, as docker's CLI does.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn wait_container(&self, key: &str) -> Result<WaitResult> {
        let r = match self.containers().resolve(key) {
            Ok(r) => r,
            Err(e) if e.kind == crate::ErrorKind::NotFound => {
                return self.recent_exit(key).ok_or(e);
            }
            Err(e) => return Err(e),
        };
        self.await_recovered(&r).await?;
        let r = self.containers().resolve(&r.id)?;
        let result = if r.state == ContainerState::Exited {
            WaitResult {
                exit_code: r.exit_code.unwrap_or(-1),
                oom_killed: r.oom_killed,
                error: r.error.clone(),
            }
        } else {
            let client = self.shim_client(&r.id);
            let rec = tokio::task::spawn_blocking(move || client.wait())
                .await
                .map_err(|e| AgentError::internal(e.to_string()))?
                .map_err(runtime_err)?;
            // Recorded here rather than waiting for the watcher to do it: the answer
            // (and, for `--rm`, the removal) need not wait for another task's turn.
            self.store_exit(&r.id, &rec)?;
            WaitResult {
                exit_code: i64::from(rec.exit_code),
                oom_killed: rec.oom_killed,
                error: rec.error,
            }
        };
        if r.auto_remove {
            // The waiter has what it needs: remove, as docker's CLI does for `run --rm`.
            match self.remove_container(&r.id, true).await {
                Ok(()) => {}
                Err(e) if e.kind == crate::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(result)
    }
}

/// A new container's record, as inserted before anything is launched.
fn new_record(id: &str, name: &str, req: &CreateRequest, image_id: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.to_string(),
        name: name.to_string(),
        image: req.image.clone(),
        image_id: image_id.to_string(),
        created_at: now(),
        spec: serde_json::to_value(req).unwrap_or_default(),
        labels: req.labels.clone(),
        state: ContainerState::Created,
        pid: None,
        exit_code: None,
        oom_killed: false,
        error: None,
        started_at: None,
        finished_at: None,
        auto_remove: req.auto_remove,
    }
}

/// Attaches the container's network, then lets its shim start the process by writing `go`
/// (with the container's address) into the start gate. On an error the gate's write end is
/// dropped unwritten, and the shim cancels the start.
async fn attach_then_open_gate(
    pending: PendingNetwork,
    gate_w: Option<std::os::fd::OwnedFd>,
) -> Result<()> {
    let info = pending.attach().await?;
    let go = match info.ipv4() {
        Some(ip) => format!("go {ip}\n"),
        None => "go\n".to_string(),
    };
    if let Some(w) = gate_w {
        // A failed write (the shim already gave up) shows as launch's error.
        let _ = std::fs::File::from(w).write_all(go.as_bytes());
    }
    Ok(())
}

//! The agent: one value that owns the node's state and answers every operation.

use std::sync::Arc;

use zlayer_image::registry::RegistryClient;
use zlayer_image::store::ImageStore;

use crate::config::AgentConfig;
use crate::containers::ContainerStore;
use crate::db::Db;
use crate::error::{AgentError, Result};
use crate::images::{registry_client, store_err};

/// The node agent. Shared as `Arc<Agent>`; every method is safe to call concurrently.
pub struct Agent {
    config: AgentConfig,
    images: ImageStore,
    registry: RegistryClient,
    containers: ContainerStore,
    networking: crate::network::Networking,
    /// Exits of `--rm` containers already removed, so a `wait` that arrives after the removal
    /// still gets the exit code (docker's CLI has the same race and the same answer).
    recent_exits: parking_lot::Mutex<Vec<RecentExit>>,
    /// Removed containers' directories still being unmounted and deleted (containers::trash).
    purges: Arc<crate::containers::trash::Purges>,
    /// Exited or removed containers' sandboxes being released in the background.
    releasing: Arc<crate::containers::network::Releasing>,
    /// Deployments, the supervisor's bookkeeping, events and metrics.
    pub(crate) services: crate::services::Services,
    /// Watched shims and containers still being recovered (containers::liveness).
    pub(crate) liveness: crate::containers::liveness::Liveness,
}

/// The last word of an auto-removed container.
pub(crate) struct RecentExit {
    pub id: String,
    pub name: String,
    pub result: crate::containers::WaitResult,
    pub at: std::time::Instant,
}

impl Agent {
    /// Opens (creating if needed) the agent's directories and state. Call
    /// [`Agent::recover`] next, inside the runtime, to re-adopt running containers.
    pub fn open(config: AgentConfig) -> Result<Self> {
        config.paths.create_all()?;
        let images = ImageStore::open(&config.paths.root).map_err(store_err)?;
        let registry = registry_client(&config.file)?;
        let db = Arc::new(Db::open(&config.paths.root.join("agent.db"))?);
        let networking = crate::network::Networking::open(&config.paths);
        let services = crate::services::Services::open(db.clone())?;
        services
            .published
            .set_limits(config.file.published_ports.limits()?);
        Ok(Self {
            networking,
            config,
            images,
            registry,
            services,
            containers: ContainerStore::new(db),
            recent_exits: parking_lot::Mutex::new(Vec::new()),
            purges: Arc::default(),
            liveness: Default::default(),
            releasing: Arc::default(),
        })
    }

    /// Re-adopts containers that run under their shims since an earlier daemon.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        if self.networking.has_networks() {
            self.networking.ensure_ready().await?;
        }
        self.purge_trash();
        // Networking first: its leak clean-up lists the records before the (background)
        // container recovery starts removing `--rm` ones.
        self.recover_networking().await?;
        self.recover_containers().await?;
        self.start_supervisor();
        Ok(())
    }

    /// Networks, sandboxes and the per-network DNS servers.
    pub fn networking(&self) -> &crate::network::Networking {
        &self.networking
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    pub(crate) fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    pub fn containers(&self) -> &ContainerStore {
        &self.containers
    }

    pub(crate) fn purges(&self) -> Arc<crate::containers::trash::Purges> {
        Arc::clone(&self.purges)
    }

    pub(crate) fn releasing(&self) -> Arc<crate::containers::network::Releasing> {
        Arc::clone(&self.releasing)
    }

    /// Runs blocking work (the state database, files, a shim's socket) on tokio's blocking
    /// pool: the agent's public calls are async, and the agent, not each front end, knows
    /// which of them block.
    pub(crate) async fn run_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Agent) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let agent = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&agent))
            .await
            .map_err(|e| AgentError::internal(format!("blocking task failed: {e}")))?
    }

    /// Remembers the exit of an auto-removed container for five minutes.
    pub(crate) fn remember_exit(
        &self,
        id: &str,
        name: &str,
        result: crate::containers::WaitResult,
    ) {
        let mut v = self.recent_exits.lock();
        v.retain(|e| e.at.elapsed() < std::time::Duration::from_secs(300));
        v.push(RecentExit {
            id: id.to_string(),
            name: name.to_string(),
            result,
            at: std::time::Instant::now(),
        });
    }

    /// The remembered exit of an auto-removed container, by name or id prefix.
    pub(crate) fn recent_exit(&self, key: &str) -> Option<crate::containers::WaitResult> {
        let v = self.recent_exits.lock();
        v.iter()
            .rev()
            .find(|e| e.name == key || (!key.is_empty() && e.id.starts_with(key)))
            .map(|e| e.result.clone())
    }
}

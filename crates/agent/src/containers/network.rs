//! Containers on networks: a bridge container's sandbox (namespace + CNI ADD) is made before
//! its process starts and released when the container exits (as docker does: an exited
//! container holds no address, so exited containers cannot exhaust a subnet; its record stays
//! until `rm`), or when its start failed; `container:NAME` joins another container's sandbox (a
//! pod). Names go into the network's DNS.
//!
//! The release (CNI DEL, namespace unmount, lease) runs in the background, off the path of
//! whoever saw the exit: `run --rm` answers its client without waiting for plugin execs.
//! Nothing is lost if the daemon dies first: at the next start every sandbox whose container is
//! exited or gone is destroyed (see [`Agent::recover_networking`]).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zlayer_runtime::{NetworkMode as RuntimeMode, RunOptions};

use super::record::{short_id, ContainerRecord, ContainerState};
use super::request::CreateRequest;
use crate::error::{AgentError, Result};
use crate::network::{
    net_err, Attached, NetworkError, NetworkInfo, NetworkManager, NetworkMode, PortMapping,
    SandboxInfo, SandboxRequest, DEFAULT_NETWORK,
};
use crate::Agent;
use zlayer_network::PreparedSandbox;

/// The network a request asks for, `bridge` (the default network) when it names none.
pub fn requested_network(req: &CreateRequest) -> &str {
    req.network.as_deref().unwrap_or("bridge")
}

/// Docker's `ps` form of a published port: `0.0.0.0:8080->80/tcp`.
pub fn port_text(p: &PortMapping) -> String {
    let ip = p
        .host_ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "0.0.0.0".into());
    format!(
        "{ip}:{}->{}/{}",
        p.host_port,
        p.container_port,
        p.protocol.as_str()
    )
}

/// What a sandbox being released still holds until its CNI DEL is done.
struct Held {
    network: Option<String>,
    host_ports: Vec<u16>,
}

/// Sandboxes being released in the background. An exit's release and the removal that follows
/// do not run the same CNI DEL twice at once, and a new container that needs what a release
/// still holds (a published host port, the last free address of a small subnet) or a
/// `network rm` waits for it instead of failing.
#[derive(Default)]
pub(crate) struct Releasing {
    held: parking_lot::Mutex<HashMap<String, Held>>,
    changed: tokio::sync::Notify,
}

/// How long a new container or `network rm` waits for releases in flight (a CNI DEL takes tens
/// of milliseconds; a stuck plugin must not hang the caller forever).
const RELEASE_WAIT: Duration = Duration::from_secs(30);

impl Releasing {
    /// False when `id` is being released already.
    fn begin(&self, id: &str, info: &SandboxInfo) -> bool {
        let mut held = self.held.lock();
        if held.contains_key(id) {
            return false;
        }
        let owns = info.shares_with.is_none();
        held.insert(
            id.to_string(),
            Held {
                network: info.network.clone().filter(|_| owns),
                host_ports: if owns {
                    info.ports.iter().map(|p| p.host_port).collect()
                } else {
                    Vec::new()
                },
            },
        );
        true
    }

    fn end(&self, id: &str) {
        self.held.lock().remove(id);
        self.changed.notify_waiters();
    }

    /// Releases in flight on `network`.
    fn on_network(&self, network: &str) -> usize {
        self.held
            .lock()
            .values()
            .filter(|h| h.network.as_deref() == Some(network))
            .count()
    }

    /// Waits (up to [`RELEASE_WAIT`]) until no release in flight matches `blocks`.
    async fn wait_while(&self, blocks: impl Fn(&Held) -> bool) {
        let _ = tokio::time::timeout(RELEASE_WAIT, async {
            loop {
                let changed = self.changed.notified();
                if !self.held.lock().values().any(&blocks) {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }
}

/// Destroys a container's sandbox (blocking: CNI DEL and namespace removal). When it shared
/// another container's namespace and that owner has exited meanwhile (its own release was
/// refused while sharers lived), the owner's sandbox goes too.
fn release_sandbox(
    mgr: &NetworkManager,
    store: &super::record::ContainerStore,
    id: &str,
    shares_with: Option<&str>,
) {
    match mgr.destroy_sandbox(id) {
        Ok(_) => {}
        // Running containers share its namespace: released with the last of them.
        Err(NetworkError::SandboxShared { .. }) => return,
        Err(e) => {
            tracing::warn!(id = %short_id(id), "releasing network sandbox: {e} (retried at the next daemon start)");
            return;
        }
    }
    let Some(owner) = shares_with else {
        return;
    };
    let owner_done = match store.get(owner) {
        Ok(Some(r)) => r.state == ContainerState::Exited,
        Ok(None) => true,
        Err(_) => false,
    };
    if owner_done {
        match mgr.destroy_sandbox(owner) {
            Ok(_) | Err(NetworkError::SandboxShared { .. }) => {}
            Err(e) => {
                tracing::warn!(id = %short_id(owner), "releasing network sandbox: {e} (retried at the next daemon start)")
            }
        }
    }
}

/// A container's sandbox whose namespace exists but whose CNI ADD has not run yet (see
/// [`Agent::prepare_network`]).
pub(crate) struct PendingNetwork {
    mgr: Arc<NetworkManager>,
    prepared: PreparedSandbox,
}

impl PendingNetwork {
    /// Whether a CNI ADD is still to run (bridge networks); a shared namespace has nothing to
    /// attach.
    pub(crate) fn needs_attach(&self) -> bool {
        matches!(self.prepared.info().mode, NetworkMode::Bridge(_))
    }

    /// Runs CNI ADD on a blocking thread; the sandbox is ready when the result is `Ok`, and
    /// entirely removed again when it is `Err`.
    pub(crate) async fn attach(self) -> Result<SandboxInfo> {
        let PendingNetwork { mgr, prepared } = self;
        tokio::task::spawn_blocking(move || mgr.attach_sandbox(prepared))
            .await
            .map_err(|e| AgentError::internal(format!("network task failed: {e}")))?
            .map_err(net_err)
    }
}

impl Agent {
    /// Makes the container's sandbox when it needs one and points `options` at it. `None`:
    /// no sandbox (`none`, `host`, or joining a container that has none).
    ///
    /// For a bridge network only the namespace is made here (about a millisecond); the CNI ADD
    /// is left to the returned [`PendingNetwork`], so the caller can run it while the container
    /// is being created, and must not start the container before it succeeded. Its address is
    /// not in `options` yet (it is known after the ADD).
    pub(crate) async fn prepare_network(
        &self,
        id: &str,
        req: &CreateRequest,
        options: &mut RunOptions,
    ) -> Result<Option<PendingNetwork>> {
        let spec = requested_network(req);
        let mut ports = Vec::new();
        for p in &req.publish {
            ports.push(p.parse::<PortMapping>().map_err(net_err)?);
        }
        for p in &ports {
            let proto = match p.protocol {
                zlayer_network::Protocol::Tcp => zlayer_spec::Protocol::Tcp,
                zlayer_network::Protocol::Udp => zlayer_spec::Protocol::Udp,
            };
            if let Some(owner) = self.services().published.owner_of(p.host_port, proto) {
                return Err(AgentError::conflict(format!(
                    "cannot publish port {p}: host port {}/{} is published by service {owner}",
                    p.host_port,
                    p.protocol.as_str()
                )));
            }
        }
        let mode = match spec {
            "none" | "host" => {
                if let Some(p) = req.publish.first() {
                    return Err(AgentError::invalid(format!(
                        "cannot publish port {p}: --network {spec} has no ports to map; use a bridge network"
                    )));
                }
                return Ok(None);
            }
            _ => match spec.strip_prefix("container:") {
                Some(target) => {
                    if let Some(p) = req.publish.first() {
                        return Err(AgentError::invalid(format!(
                            "cannot publish port {p} with --network {spec}: publish it on the container that owns the network"
                        )));
                    }
                    let t = self.containers().resolve(target)?;
                    if t.state != ContainerState::Running {
                        return Err(AgentError::conflict(format!(
                            "cannot join the network of container {}: it is not running",
                            t.name
                        )));
                    }
                    if self.networking().sandbox(&t.id).is_none() {
                        // A `none`/`host` container: share its namespace as it is.
                        let pid = t.pid.ok_or_else(|| {
                            AgentError::conflict(format!("container {} has no process", t.name))
                        })?;
                        options.network =
                            RuntimeMode::Netns(PathBuf::from(format!("/proc/{pid}/ns/net")));
                        return Ok(None);
                    }
                    NetworkMode::Container(t.id)
                }
                None if spec == "bridge" => NetworkMode::Bridge(DEFAULT_NETWORK.to_string()),
                None => NetworkMode::Bridge(spec.to_string()),
            },
        };
        let mgr = self.networking().ensure_ready().await?;
        if let NetworkMode::Bridge(net) = &mode {
            self.await_held_by_releases(&mgr, net, &ports).await;
        }
        let sandbox_req = SandboxRequest {
            id: id.to_string(),
            mode,
            ports,
            dns_search: req.dns_search.clone(),
        };
        let m = Arc::clone(&mgr);
        let prepared = tokio::task::spawn_blocking(move || m.prepare_sandbox(&sandbox_req))
            .await
            .map_err(|e| AgentError::internal(format!("network task failed: {e}")))?
            .map_err(net_err)?;
        let pending = PendingNetwork { mgr, prepared };
        let a = Attached::from_sandbox(pending.prepared.info());
        let Some(a) = a else {
            // Only bridge and shared sandboxes get here, and both have a namespace.
            let _ = pending.attach().await;
            let _ = self.networking().destroy_sandbox(id).await;
            return Err(AgentError::internal(format!(
                "sandbox of {} has no network namespace",
                short_id(id)
            )));
        };
        options.network = RuntimeMode::Netns(a.netns);
        options.ip_address = a.ip;
        if options.dns.is_empty() {
            options.dns = a.dns;
        }
        if options.dns_search.is_empty() {
            options.dns_search = a.dns_search;
        }
        Ok(Some(pending))
    }

    /// Registers a started container's name on its network's DNS server.
    pub(crate) fn register_dns(&self, id: &str, name: &str) {
        if let Some(info) = self.networking().sandbox(id) {
            if let (Some(net), Some(ip)) = (&info.network, info.ipv4()) {
                self.networking().register_container(net, name, ip);
            }
        }
    }

    /// Forgets an exited container's name.
    pub(crate) fn unregister_dns(&self, id: &str, name: &str) {
        if let Some(info) = self.networking().sandbox(id) {
            if let Some(net) = &info.network {
                self.networking().unregister_container(net, name);
            }
        }
    }

    /// Takes an exited (or removed) container off its network: its DNS name at once, its
    /// sandbox in the background (see the module doc). A sandbox other running containers
    /// share stays until the last of them is released.
    pub(crate) fn release_network(&self, id: &str, name: &str) {
        self.unregister_dns(id, name);
        let Ok(mgr) = self.networking().manager() else {
            return;
        };
        // `none`/`host` containers have no sandbox: nothing to hand to a thread.
        let Some(info) = self.networking().sandbox(id) else {
            return;
        };
        let releasing = self.releasing();
        if !releasing.begin(id, &info) {
            return;
        }
        let purges = self.purges();
        let store = self.containers().clone();
        purges.start();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            release_sandbox(&mgr, &store, &id, info.shares_with.as_deref());
            releasing.end(&id);
            purges.done();
        });
    }

    /// Before a bridge sandbox is reserved: waits for releases in flight that still hold one
    /// of its host ports, or the addresses it could get (all of `network`'s free addresses are
    /// held by releases). Costs nothing when no release is in flight.
    async fn await_held_by_releases(
        &self,
        mgr: &Arc<NetworkManager>,
        network: &str,
        ports: &[PortMapping],
    ) {
        let releasing = self.releasing();
        let wanted: Vec<u16> = ports.iter().map(|p| p.host_port).collect();
        if !wanted.is_empty() {
            releasing
                .wait_while(|h| h.host_ports.iter().any(|p| wanted.contains(p)))
                .await;
        }
        let in_flight = releasing.on_network(network);
        if in_flight == 0 {
            return;
        }
        let (m, n) = (Arc::clone(mgr), network.to_string());
        let free = tokio::task::spawn_blocking(move || m.free_addresses(&n))
            .await
            .ok()
            .and_then(|r| r.ok());
        if free == Some(0) {
            releasing
                .wait_while(|h| h.network.as_deref() == Some(network))
                .await;
        }
    }

    /// Refuses to remove a container whose network namespace others still use.
    pub(crate) fn check_no_sharers(&self, r: &ContainerRecord) -> Result<()> {
        let Ok(mgr) = self.networking().manager() else {
            return Ok(());
        };
        let sharers: Vec<String> = mgr
            .list_sandboxes()
            .map_err(net_err)?
            .into_iter()
            .filter(|s| s.shares_with.as_deref() == Some(r.id.as_str()))
            .map(|s| {
                self.containers()
                    .get(&s.id)
                    .ok()
                    .flatten()
                    .map(|c| c.name)
                    .unwrap_or(s.id)
            })
            .collect();
        if sharers.is_empty() {
            Ok(())
        } else {
            Err(AgentError::conflict(format!(
                "cannot remove container {}: container(s) {} share its network namespace; remove them first",
                r.name,
                sharers.join(", ")
            )))
        }
    }

    /// Takes a container off its network: DNS name, then the sandbox (CNI DEL, namespace).
    pub(crate) async fn detach_network(&self, id: &str, name: &str) {
        self.unregister_dns(id, name);
        if let Err(e) = self.networking().destroy_sandbox(id).await {
            // The record goes anyway; the next daemon start's leak cleanup retries.
            tracing::warn!(id = %short_id(id), "destroying network sandbox: {e}");
        }
    }

    /// At daemon start, after containers were re-adopted: sandboxes of containers that no
    /// longer exist are removed, and running containers' names are registered again.
    pub(crate) async fn recover_networking(&self) -> Result<()> {
        if !self.networking().has_networks() {
            return Ok(());
        }
        let records = self.containers().list()?;
        // Exited containers hold no network (a daemon that died before releasing it leaves
        // it to this cleanup); owners of running sharers are kept by `cleanup_leaks`.
        let live: HashSet<String> = records
            .iter()
            .filter(|r| r.state != ContainerState::Exited)
            .map(|r| r.id.clone())
            .collect();
        let report = self.networking().cleanup_leaks(live).await?;
        if !report.sandboxes.is_empty()
            || !report.namespaces.is_empty()
            || !report.addresses.is_empty()
        {
            tracing::info!(
                sandboxes = ?report.sandboxes,
                namespaces = ?report.namespaces,
                addresses = ?report.addresses,
                "cleaned up leaked network state"
            );
        }
        for e in &report.errors {
            tracing::warn!("network leak cleanup: {e}");
        }
        for r in records
            .iter()
            .filter(|r| r.state == ContainerState::Running)
        {
            self.register_dns(&r.id, &r.name);
        }
        Ok(())
    }

    /// Sets the healthy addresses of a service, answered as `service` and
    /// `service.deployment` by the DNS server of each network holding those addresses (for the
    /// services supervisor; an empty list removes the name).
    pub fn set_dns_service(&self, deployment: &str, service: &str, ips: &[Ipv4Addr]) {
        self.networking().set_service(deployment, service, ips);
    }

    /// Forgets every DNS name of a deployment.
    pub fn remove_dns_deployment(&self, deployment: &str) {
        self.networking().remove_deployment(deployment);
    }

    /// `network create NAME [--subnet CIDR]`.
    pub async fn create_network(&self, name: &str, subnet: Option<&str>) -> Result<NetworkInfo> {
        let subnet = match subnet {
            Some(s) => Some(s.parse::<ipnet::Ipv4Net>().map_err(|e| {
                AgentError::invalid(format!(
                    "invalid subnet {s:?}: {e} (expected e.g. 10.230.0.0/16)"
                ))
            })?),
            None => None,
        };
        if matches!(name, "none" | "host" | "bridge") || name.starts_with("container:") {
            return Err(AgentError::invalid(format!(
                "network name {name:?} is reserved"
            )));
        }
        let mgr = self.networking().ensure_ready().await?;
        let n = name.to_string();
        let m = mgr.clone();
        let info = tokio::task::spawn_blocking(move || m.create_network(&n, subnet))
            .await
            .map_err(|e| AgentError::internal(format!("network task failed: {e}")))?
            .map_err(net_err)?;
        self.networking().start_dns(&mgr, &info).await?;
        tracing::info!(network = %info.name, subnet = %info.subnet, "network created");
        Ok(info)
    }

    /// `network ls`.
    pub async fn list_networks(&self) -> Result<Vec<NetworkInfo>> {
        let mgr = self.networking().ensure_ready().await?;
        tokio::task::spawn_blocking(move || mgr.list_networks())
            .await
            .map_err(|e| AgentError::internal(format!("network task failed: {e}")))?
            .map_err(net_err)
    }

    /// `network rm NAME`: refused for the default network and while containers use it.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        if name == DEFAULT_NETWORK || name == "bridge" {
            return Err(AgentError::conflict(format!(
                "{name} is the default network and cannot be removed"
            )));
        }
        let mgr = self.networking().ensure_ready().await?;
        // Containers removed (or exited) just before are still leaving it in the background.
        self.releasing()
            .wait_while(|h| h.network.as_deref() == Some(name))
            .await;
        let n = name.to_string();
        let res = tokio::task::spawn_blocking(move || mgr.remove_network(&n))
            .await
            .map_err(|e| AgentError::internal(format!("network task failed: {e}")))?;
        match res {
            Ok(()) => {}
            Err(crate::network::NetworkError::NetworkInUse { sandboxes, .. }) => {
                let users: Vec<String> = sandboxes
                    .into_iter()
                    .map(|s| {
                        self.containers()
                            .get(&s)
                            .ok()
                            .flatten()
                            .map(|c| c.name)
                            .unwrap_or(s)
                    })
                    .collect();
                return Err(AgentError::conflict(format!(
                    "network {name} is in use by container(s) {}; remove them first",
                    users.join(", ")
                )));
            }
            Err(e) => return Err(net_err(e)),
        }
        self.networking().stop_dns(name);
        tracing::info!(network = %name, "network removed");
        Ok(())
    }
}

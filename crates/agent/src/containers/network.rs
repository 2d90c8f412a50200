//! Containers on networks: a bridge container's sandbox (namespace + CNI ADD) is made before
//! its process starts and destroyed when the container is removed (or its start failed);
//! `container:NAME` joins another container's sandbox (a pod). Names go into the network's DNS.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use zlayer_runtime::bundle::{NetworkMode as RuntimeMode, RunOptions};

use super::record::{short_id, ContainerRecord, ContainerState};
use super::request::CreateRequest;
use crate::error::{AgentError, Result};
use crate::network::{
    net_err, Attached, NetworkInfo, NetworkManager, NetworkMode, PortMapping, SandboxInfo,
    SandboxRequest, DEFAULT_NETWORK,
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
        let live: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
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

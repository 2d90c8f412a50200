//! Container networking: the agent's [`NetworkManager`] (CNI bridge networks, sandboxes,
//! published ports) and one DNS server per network answering container and service names.
//!
//! Networking is started lazily: the default network `zlayer0` (a bridge and firewall rules in
//! the agent's network namespace) is made when the first bridge container or network command
//! needs it, or at daemon start when networks exist from an earlier run. A daemon that only
//! handles images therefore never touches interfaces or firewall rules.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use zlayer_network::dns::{DnsRegistry, DnsServer};
/// The network crate's capped listeners, for a front end's own sockets (the metrics listener).
pub use zlayer_network::listen;
pub use zlayer_network::{
    LeakReport, NetworkError, NetworkInfo, NetworkManager, NetworkMode, NetworkOptions,
    PortMapping, SandboxInfo, SandboxRequest, DEFAULT_NETWORK,
};

use crate::error::{AgentError, ErrorKind, Result};
use crate::paths::Paths;

/// The DNS "deployment" plain containers' names are registered under; a bare `NAME` query
/// answers any deployment's `NAME`, so containers resolve each other by name.
pub const CONTAINERS_DNS_DOMAIN: &str = "containers";

/// Maps the network crate's errors onto the agent's kinds, keeping the message.
pub fn net_err(e: NetworkError) -> AgentError {
    let kind = match &e {
        NetworkError::NetworkNotFound(_) | NetworkError::SandboxNotFound(_) => ErrorKind::NotFound,
        NetworkError::Invalid { .. } => ErrorKind::InvalidInput,
        NetworkError::NetworkExists(_)
        | NetworkError::NetworkInUse { .. }
        | NetworkError::SubnetOverlap { .. }
        | NetworkError::NoFreeSubnet { .. }
        | NetworkError::NoDefaultBridge { .. }
        | NetworkError::SandboxExists(_)
        | NetworkError::SandboxShared { .. }
        | NetworkError::PortConflict { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    };
    AgentError::new(kind, e.to_string())
}

fn join_err(e: tokio::task::JoinError) -> AgentError {
    AgentError::internal(format!("network task failed: {e}"))
}

/// Where the agent's network state lives: conflists under the persistent root (networks
/// survive reboots), sandboxes, leases and namespaces under the runtime state (they do not).
pub fn options_for(paths: &Paths) -> NetworkOptions {
    let mut opts = NetworkOptions::new(paths.root.join("cni"), paths.state.join("network"));
    opts.netns_dir = paths.state.join("netns");
    opts
}

/// One network's DNS: the names it answers and the server answering them.
struct NetworkDns {
    registry: Arc<DnsRegistry>,
    subnet: ipnet::Ipv4Net,
    _server: DnsServer,
}

/// The agent's networking. `manager` is the error opening it when the CNI plugins are
/// unusable: `none`/`host` containers still work, bridge ones fail with that reason. Shared
/// (`Arc`), since every bridge container that asks gets the same reason.
pub struct Networking {
    manager: std::result::Result<Arc<NetworkManager>, Arc<NetworkError>>,
    /// Set once `ensure_default` ran and the DNS servers were started.
    ready: tokio::sync::Mutex<bool>,
    dns: parking_lot::Mutex<HashMap<String, NetworkDns>>,
}

impl Networking {
    /// Opens the manager (creates directories, negotiates the CNI version); touches no
    /// interface or firewall rule.
    pub fn open(paths: &Paths) -> Self {
        let manager = NetworkManager::open(options_for(paths))
            .map(Arc::new)
            .map_err(Arc::new);
        if let Err(e) = &manager {
            tracing::warn!("bridge networking unavailable: {e}");
        }
        Self {
            manager,
            ready: tokio::sync::Mutex::new(false),
            dns: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The manager, or why there is none.
    pub fn manager(&self) -> Result<Arc<NetworkManager>> {
        self.manager
            .clone()
            .map_err(|e| AgentError::internal(format!("bridge networking is unavailable: {e}")))
    }

    /// True when networks exist from an earlier run (so the daemon sets them up at start).
    pub fn has_networks(&self) -> bool {
        match &self.manager {
            Ok(m) => std::fs::read_dir(&m.options().config_dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Makes sure the default network and every network's DNS server exist.
    pub async fn ensure_ready(&self) -> Result<Arc<NetworkManager>> {
        let mgr = self.manager()?;
        let mut ready = self.ready.lock().await;
        if *ready {
            return Ok(mgr);
        }
        let m = Arc::clone(&mgr);
        let networks = tokio::task::spawn_blocking(move || {
            m.ensure_default()?;
            m.list_networks()
        })
        .await
        .map_err(join_err)?
        .map_err(net_err)?;
        for net in networks {
            self.start_dns(&mgr, &net).await?;
        }
        *ready = true;
        Ok(mgr)
    }

    /// Starts the DNS server of `net` (no-op if it runs).
    pub async fn start_dns(&self, mgr: &NetworkManager, net: &NetworkInfo) -> Result<()> {
        if self.dns.lock().contains_key(&net.name) {
            return Ok(());
        }
        let registry = Arc::new(DnsRegistry::new());
        let listen = mgr.dns_listen_addr(&net.name).map_err(net_err)?;
        let server = DnsServer::start(listen, Arc::clone(&registry), mgr.dns_upstreams())
            .await
            .map_err(net_err)?;
        self.dns.lock().insert(
            net.name.clone(),
            NetworkDns {
                registry,
                subnet: net.subnet,
                _server: server,
            },
        );
        Ok(())
    }

    /// Stops the DNS server of a removed network.
    pub fn stop_dns(&self, network: &str) {
        self.dns.lock().remove(network);
    }

    /// Registers a container's name on its network's DNS server.
    pub fn register_container(&self, network: &str, name: &str, ip: Ipv4Addr) {
        if let Some(d) = self.dns.lock().get(network) {
            d.registry
                .set_service(CONTAINERS_DNS_DOMAIN, name, vec![ip]);
        }
    }

    /// Forgets a container's name (on exit and removal).
    pub fn unregister_container(&self, network: &str, name: &str) {
        if let Some(d) = self.dns.lock().get(network) {
            d.registry.remove_service(CONTAINERS_DNS_DOMAIN, name);
        }
    }

    /// Sets a service's healthy addresses: each network's DNS server answers `service` and
    /// `service.deployment` with the addresses inside its subnet. An empty list removes it.
    pub fn set_service(&self, deployment: &str, service: &str, ips: &[Ipv4Addr]) {
        for d in self.dns.lock().values() {
            let mine: Vec<Ipv4Addr> = ips
                .iter()
                .copied()
                .filter(|ip| d.subnet.contains(ip))
                .collect();
            if mine.is_empty() {
                d.registry.remove_service(deployment, service);
            } else {
                d.registry.set_service(deployment, service, mine);
            }
        }
    }

    /// Forgets every service of a deployment on every network.
    pub fn remove_deployment(&self, deployment: &str) {
        for d in self.dns.lock().values() {
            d.registry.remove_deployment(deployment);
        }
    }

    /// The sandbox of a container, if it has one.
    pub fn sandbox(&self, id: &str) -> Option<SandboxInfo> {
        self.manager.as_ref().ok()?.sandbox(id).ok().flatten()
    }

    /// Destroys a container's sandbox (CNI DEL, namespace unmounted); fine if it has none.
    pub async fn destroy_sandbox(&self, id: &str) -> Result<()> {
        let Ok(mgr) = self.manager.clone() else {
            return Ok(());
        };
        let id = id.to_string();
        tokio::task::spawn_blocking(move || mgr.destroy_sandbox(&id))
            .await
            .map_err(join_err)?
            .map_err(net_err)?;
        Ok(())
    }

    /// Removes sandboxes, namespaces and leases of containers that no longer exist.
    pub async fn cleanup_leaks(&self, live: HashSet<String>) -> Result<LeakReport> {
        let mgr = self.manager()?;
        tokio::task::spawn_blocking(move || mgr.cleanup_leaks(&live))
            .await
            .map_err(join_err)?
            .map_err(net_err)
    }
}

/// What a container's network request became: the runtime's mode plus the values that go into
/// its /etc/hosts and /etc/resolv.conf.
pub struct Attached {
    pub netns: PathBuf,
    pub ip: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
}

impl Attached {
    /// From a created sandbox: join its namespace, use its DNS server and search list.
    pub fn from_sandbox(info: &SandboxInfo) -> Option<Self> {
        let netns = info.netns_path.clone()?;
        let dns = zlayer_network::dns::resolv::nameservers(&info.resolv_conf);
        let dns_search = info
            .resolv_conf
            .lines()
            .filter_map(|l| l.strip_prefix("search "))
            .flat_map(|s| s.split_whitespace().map(str::to_string))
            .collect();
        Some(Self {
            netns,
            ip: info.ipv4().map(IpAddr::V4),
            dns,
            dns_search,
        })
    }
}

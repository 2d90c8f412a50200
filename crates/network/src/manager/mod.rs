//! [`NetworkManager`]: the entry point the daemon uses for networks and sandboxes.
//!
//! All methods are blocking (they exec CNI plugins and iptables); call them from
//! `tokio::task::spawn_blocking` in async code. Methods may be called from several threads.
//!
//! Every namespace-affecting operation (bridges, iptables rules) happens in the namespace of the
//! *calling process* — the daemon's — which in tests is a namespace the test created.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;

use crate::cni::{Attachment, CniInvoker, CniResult};
use crate::dns::resolv;
use crate::error::{NetworkError, Result};
use crate::networks::{self, NetworkInfo, DEFAULT_NETWORK, DEFAULT_POOL, DEFAULT_SUBNET};
use crate::ports;
use crate::sandbox::{validate_id, NetworkMode, PreparedSandbox, SandboxInfo, SandboxRequest};
use crate::state::{self, CachedAttachment, SandboxRecord, StateDirs};
use crate::{bridges, isolation, netns};

mod leaks;
pub use leaks::LeakReport;

/// Interface name of the sandbox side of a bridge attachment.
pub const SANDBOX_IFNAME: &str = "eth0";

/// Where things live; see [`NetworkOptions::new`] for the defaults.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Our conflists (`<name>.conflist`).
    pub config_dir: PathBuf,
    /// Sandbox records, cached CNI results, host-local's IP store.
    pub state_dir: PathBuf,
    /// Namespace bind mounts (`<sandbox id>`).
    pub netns_dir: PathBuf,
    /// Where CNI plugin binaries are searched, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Subnet of the default network `zlayer0` (only used when it is first created).
    pub default_subnet: Ipv4Net,
    /// /16s for networks created without a subnet.
    pub subnet_pool: Ipv4Net,
    /// The host's resolver configuration (copied for `host`/`none` sandboxes).
    pub host_resolv_conf: PathBuf,
}

impl NetworkOptions {
    /// Options with conflists in `config_dir`, state in `state_dir`, namespaces in
    /// `state_dir/netns`, Debian's plugin directory and the default subnets.
    pub fn new(config_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        NetworkOptions {
            config_dir: config_dir.into(),
            netns_dir: state_dir.join("netns"),
            state_dir,
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            default_subnet: parse_const(DEFAULT_SUBNET),
            subnet_pool: parse_const(DEFAULT_POOL),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }

    /// The system-wide layout: `/etc/zlayer-agent/cni`, `/run/zlayer-agent/network`,
    /// `/run/zlayer-agent/netns`. State lives under /run on purpose: namespaces and IP leases do
    /// not survive a reboot, so neither should their records.
    pub fn system() -> Self {
        let mut opts = Self::new("/etc/zlayer-agent/cni", "/run/zlayer-agent/network");
        opts.netns_dir = PathBuf::from("/run/zlayer-agent/netns");
        opts
    }
}

fn parse_const(s: &str) -> Ipv4Net {
    // The constants are literals checked by the unit test `constants_parse`.
    s.parse().unwrap_or_else(|_| Ipv4Net::default())
}

/// Networks and sandboxes of one agent.
#[derive(Debug)]
pub struct NetworkManager {
    opts: NetworkOptions,
    dirs: StateDirs,
    cni: CniInvoker,
    /// Serialises decisions over shared state (port reservation, network removal).
    lock: Mutex<()>,
    /// Whether the namespace directory was made a shared mount point yet (done before the first
    /// namespace is created, not at open: a daemon that never makes a sandbox leaves no mount).
    netns_dir_prepared: Mutex<bool>,
}

impl NetworkManager {
    /// Open (creating directories as needed) and negotiate the CNI version with the installed
    /// plugins. Does not touch interfaces or firewall rules ([`Self::ensure_default`] does), nor
    /// mounts (the namespace directory becomes a mount point when the first sandbox is made).
    pub fn open(opts: NetworkOptions) -> Result<Self> {
        for dir in [&opts.config_dir, &opts.state_dir] {
            fs::create_dir_all(dir).map_err(|e| NetworkError::io("creating", dir, e))?;
        }
        let cni = CniInvoker::new(opts.plugin_dirs.clone())?;
        Ok(NetworkManager {
            dirs: StateDirs {
                root: opts.state_dir.clone(),
            },
            opts,
            cni,
            lock: Mutex::new(()),
            netns_dir_prepared: Mutex::new(false),
        })
    }

    /// [`netns::prepare_dir`] once, before the first namespace of this manager is created.
    fn prepare_netns_dir(&self) -> Result<()> {
        // Only a flag is guarded; a poisoned lock is safe to reuse.
        let mut prepared = self
            .netns_dir_prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !*prepared {
            netns::prepare_dir(&self.opts.netns_dir)?;
            *prepared = true;
        }
        Ok(())
    }

    pub fn options(&self) -> &NetworkOptions {
        &self.opts
    }

    /// The CNI version negotiated with the plugins.
    pub fn cni_version(&self) -> &str {
        self.cni.cni_version()
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no half-made in-memory state (all state is on
        // disk), so a poisoned lock is safe to reuse.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- networks ----------------------------------------------------------------------------

    /// Create the default network `zlayer0` if missing, and (re)apply the isolation rules.
    /// Call once at daemon start.
    pub fn ensure_default(&self) -> Result<NetworkInfo> {
        let _g = self.guard();
        let path = networks::conflist_path(&self.opts.config_dir, DEFAULT_NETWORK);
        let info = if path.exists() {
            networks::read(&path)?
        } else {
            self.create_default_locked()?
        };
        self.apply_isolation()?;
        Ok(info)
    }

    /// Rewrite the isolation chain; under the CNI chain lock, because the firewall plugin creates
    /// the same chain with check-then-create.
    fn apply_isolation(&self) -> Result<()> {
        let networks = networks::list(&self.opts.config_dir)?;
        let _one_at_a_time = self.cni.chain_lock();
        isolation::apply(&networks)
    }

    /// Create a bridge network; picks a free /16 from the pool when `subnet` is `None`.
    pub fn create_network(&self, name: &str, subnet: Option<Ipv4Net>) -> Result<NetworkInfo> {
        let _g = self.guard();
        let info = self.create_locked(name, subnet)?;
        self.apply_isolation()?;
        Ok(info)
    }

    /// The default network on a root that has none: on `zlayer0`, adopting it when an earlier
    /// root left it behind idle, else on the first of `zlayer1`.. that is free or adoptable
    /// (see [`networks::judge_default_bridge`]). A new bridge gets the default subnet, or the
    /// first free /16 of the pool when something on this host overlaps it.
    fn create_default_locked(&self) -> Result<NetworkInfo> {
        let existing = networks::list(&self.opts.config_dir)?;
        let mut skipped = Vec::new();
        for bridge in networks::default_bridge_candidates() {
            let link = bridges::inspect(&bridge)?;
            let choice = networks::judge_default_bridge(
                link.as_ref(),
                bridges::dns_port_in_use,
                self.opts.default_subnet,
                self.opts.subnet_pool,
            );
            // This bridge's own route (if it has one) is not a conflict: it is what we use.
            let mut own: Vec<String> = existing.iter().map(|n| n.bridge.clone()).collect();
            own.push(bridge.clone());
            let routes = networks::host_routes(&own);
            let subnet = match choice {
                networks::BridgeChoice::Skip(why) => {
                    skipped.push(format!("{bridge} {why}"));
                    continue;
                }
                networks::BridgeChoice::Create => {
                    let wanted = self.opts.default_subnet;
                    match networks::check_overlap(wanted, &existing, &routes) {
                        Ok(()) => wanted,
                        Err(taken) => {
                            let free =
                                networks::pick_free(self.opts.subnet_pool, &existing, &routes)?;
                            tracing::warn!(%free, "default subnet unusable ({taken}); using {free}");
                            free
                        }
                    }
                }
                networks::BridgeChoice::Adopt(subnet) => {
                    if let Err(e) = networks::check_overlap(subnet, &existing, &routes) {
                        skipped.push(format!("{bridge}: {e}"));
                        continue;
                    }
                    tracing::info!(
                        %bridge,
                        %subnet,
                        "adopting the idle bridge an earlier zlayer-agent root left behind"
                    );
                    subnet
                }
            };
            return self.write_network(DEFAULT_NETWORK, &bridge, subnet);
        }
        Err(NetworkError::NoDefaultBridge {
            tried: skipped.join("; "),
        })
    }

    fn write_network(&self, name: &str, bridge: &str, subnet: Ipv4Net) -> Result<NetworkInfo> {
        let path = networks::conflist_path(&self.opts.config_dir, name);
        let conf = networks::conflist_on(
            bridge,
            name,
            subnet,
            self.cni.cni_version(),
            &self.dirs.ipam(),
        );
        networks::write(&path, &conf)?;
        tracing::info!(network = name, %bridge, %subnet, "created network");
        networks::read(&path)
    }

    fn create_locked(&self, name: &str, subnet: Option<Ipv4Net>) -> Result<NetworkInfo> {
        networks::validate_name(name)?;
        let path = networks::conflist_path(&self.opts.config_dir, name);
        if path.exists() {
            return Err(NetworkError::NetworkExists(name.to_string()));
        }
        let existing = networks::list(&self.opts.config_dir)?;
        let bridges: Vec<String> = existing.iter().map(|n| n.bridge.clone()).collect();
        let routes = networks::host_routes(&bridges);
        let subnet = match subnet {
            Some(s) => {
                networks::check_overlap(s, &existing, &routes)?;
                s
            }
            None => networks::pick_free(self.opts.subnet_pool, &existing, &routes)?,
        };
        self.write_network(name, &networks::bridge_name(name), subnet)
    }

    /// All networks, sorted by name.
    pub fn list_networks(&self) -> Result<Vec<NetworkInfo>> {
        networks::list(&self.opts.config_dir)
    }

    pub fn network(&self, name: &str) -> Result<NetworkInfo> {
        networks::validate_name(name)?;
        let path = networks::conflist_path(&self.opts.config_dir, name);
        if !path.exists() {
            return Err(NetworkError::NetworkNotFound(name.to_string()));
        }
        networks::read(&path)
    }

    /// Remove a network; refused while any sandbox uses it. Deletes its bridge interface.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let _g = self.guard();
        let info = self.network(name)?;
        let users: Vec<String> = self
            .records()?
            .into_iter()
            .filter(|r| r.info.network.as_deref() == Some(name))
            .map(|r| r.info.id)
            .collect();
        if !users.is_empty() {
            return Err(NetworkError::NetworkInUse {
                name: name.to_string(),
                sandboxes: users,
            });
        }
        state::remove_file(&info.conflist_path)?;
        self.apply_isolation()?;
        let ipam = self.dirs.ipam().join(name);
        if ipam.exists() {
            fs::remove_dir_all(&ipam).map_err(|e| NetworkError::io("removing", &ipam, e))?;
        }
        delete_link(&info.bridge)?;
        tracing::info!(network = name, "removed network");
        Ok(())
    }

    /// Where the network's DNS server should listen: its gateway (bridge) address, port 53.
    pub fn dns_listen_addr(&self, network: &str) -> Result<SocketAddr> {
        Ok(SocketAddr::new(
            IpAddr::V4(self.network(network)?.gateway),
            53,
        ))
    }

    /// Upstream resolvers for the DNS servers' forwarding, from the host's resolv.conf
    /// (see [`resolv::upstreams`] for how loopback resolvers are handled).
    pub fn dns_upstreams(&self) -> Vec<SocketAddr> {
        resolv::upstreams(&self.opts.host_resolv_conf)
    }

    /// The /etc/resolv.conf for containers on `network`: our DNS server on the gateway.
    pub fn resolv_conf_for(&self, network: &str, search: &[String]) -> Result<String> {
        let info = self.network(network)?;
        Ok(resolv::container_resolv_conf(
            network,
            IpAddr::V4(info.gateway),
            search,
        ))
    }

    // ---- sandboxes ---------------------------------------------------------------------------

    fn records(&self) -> Result<Vec<SandboxRecord>> {
        Ok(self.records_and_unreadable()?.0)
    }

    /// Readable records, and the paths of unreadable ones (skipped with a warning, so one damaged
    /// file does not stop the daemon; `cleanup_leaks` removes them).
    fn records_and_unreadable(&self) -> Result<(Vec<SandboxRecord>, Vec<PathBuf>)> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for (_, path) in state::json_files(&self.dirs.sandboxes())? {
            match state::read_json::<SandboxRecord>(&path) {
                Ok(Some(r)) => good.push(r),
                Ok(None) => {}
                Err(e @ NetworkError::Json { .. }) => {
                    tracing::warn!(%e, "skipping unreadable sandbox record");
                    bad.push(path);
                }
                Err(e) => return Err(e),
            }
        }
        Ok((good, bad))
    }

    /// A sandbox's info, if it exists.
    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxInfo>> {
        validate_id(id)?;
        Ok(state::read_json::<SandboxRecord>(&self.dirs.sandbox(id))?.map(|r| r.info))
    }

    /// All sandboxes (including ones whose creation is still in progress).
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>> {
        Ok(self.records()?.into_iter().map(|r| r.info).collect())
    }

    /// How many addresses `network` can still lease: host-local's range is the whole subnet
    /// but its network and broadcast addresses and the gateway; each lease is one file named
    /// after the address in the network's data directory.
    pub fn free_addresses(&self, network: &str) -> Result<u64> {
        let net = self.network(network)?;
        let size = 1u64 << (32 - u32::from(net.subnet.prefix_len()));
        let hosts = if size > 2 { size - 2 } else { size };
        let capacity = hosts.saturating_sub(1);
        let dir = self.dirs.ipam().join(network);
        let leased = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<IpAddr>().is_ok())
                .count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(NetworkError::io("listing", &dir, e)),
        };
        Ok(capacity.saturating_sub(leased))
    }

    /// Create a sandbox: its namespace exists and CNI ADD has succeeded when this returns, so the
    /// container can be started in `netns_path`. On failure nothing is left behind.
    /// Same as [`Self::prepare_sandbox`] followed by [`Self::attach_sandbox`].
    pub fn create_sandbox(&self, req: &SandboxRequest) -> Result<SandboxInfo> {
        let prepared = self.prepare_sandbox(req)?;
        self.attach_sandbox(prepared)
    }

    /// First half of [`Self::create_sandbox`]: reserve the id and ports and create the network
    /// namespace (cheap: about a millisecond). The returned sandbox's `netns_path` can already go
    /// into a container's config.json and the container can be *created* in it; it must not be
    /// *started* before [`Self::attach_sandbox`] succeeded (the CNI ADD, the slow half, which
    /// the caller can thus overlap with the rest of container creation).
    ///
    /// On failure nothing is left behind. A prepared sandbox that is dropped without being
    /// attached stays recorded as not ready; [`Self::destroy_sandbox`] or the next
    /// [`Self::cleanup_leaks`] removes it.
    pub fn prepare_sandbox(&self, req: &SandboxRequest) -> Result<PreparedSandbox> {
        validate_id(&req.id)?;
        let mut info = self.reserve(req)?;
        match self.make_namespace(req, &mut info) {
            Ok(()) => Ok(PreparedSandbox {
                info,
                req: req.clone(),
            }),
            Err(err) => Err(self.undo_failed(&req.id, &info, err)),
        }
    }

    /// Second half of [`Self::create_sandbox`]: CNI ADD (bridge mode; nothing to do in the other
    /// modes), then the sandbox is recorded as ready. On failure the whole sandbox (namespace,
    /// record, anything ADD made) is removed.
    pub fn attach_sandbox(&self, prepared: PreparedSandbox) -> Result<SandboxInfo> {
        let PreparedSandbox { mut info, req } = prepared;
        let outcome = self.cni_add(&req, &mut info).and_then(|()| {
            state::write_json_atomic(
                &self.dirs.sandbox(&req.id),
                &SandboxRecord {
                    info: info.clone(),
                    ready: true,
                },
            )
        });
        match outcome {
            Ok(()) => Ok(info),
            Err(err) => Err(self.undo_failed(&req.id, &info, err)),
        }
    }

    /// Removes whatever exists of a sandbox whose creation failed; returns the original error.
    fn undo_failed(&self, id: &str, info: &SandboxInfo, err: NetworkError) -> NetworkError {
        if let Err(cleanup) = self.teardown(info) {
            tracing::warn!(sandbox = %id, %cleanup, "cleaning up a failed sandbox");
        }
        let _ = state::remove_file(&self.dirs.sandbox(id));
        err
    }

    /// Under the lock: validate the request against existing state and write the initial record
    /// (which reserves the id and the ports).
    fn reserve(&self, req: &SandboxRequest) -> Result<SandboxInfo> {
        let _g = self.guard();
        let record_path = self.dirs.sandbox(&req.id);
        if record_path.exists() {
            return Err(NetworkError::SandboxExists(req.id.clone()));
        }
        let no_ports = |mode: &str| -> Result<()> {
            match req.ports.first() {
                Some(p) => Err(NetworkError::invalid(
                    "port mapping",
                    p.to_string(),
                    format!("ports can only be published in bridge mode, not {mode}"),
                )),
                None => Ok(()),
            }
        };
        let host_resolv = || resolv::host_resolv_conf(&self.opts.host_resolv_conf);
        let mut info = SandboxInfo {
            id: req.id.clone(),
            mode: req.mode.clone(),
            network: None,
            netns_path: None,
            ips: Vec::new(),
            gateway: None,
            ports: Vec::new(),
            resolv_conf: String::new(),
            shares_with: None,
        };
        match &req.mode {
            NetworkMode::Host => {
                no_ports("host mode (the container binds host ports directly)")?;
                info.resolv_conf = host_resolv();
            }
            NetworkMode::None => {
                no_ports("none mode")?;
                info.netns_path = Some(self.opts.netns_dir.join(&req.id));
                info.resolv_conf = host_resolv();
            }
            NetworkMode::Container(owner) => {
                no_ports("container mode (publish them on the sandbox that owns the namespace)")?;
                validate_id(owner)?;
                let target = match state::read_json::<SandboxRecord>(&self.dirs.sandbox(owner))? {
                    Some(r) if r.ready => r.info,
                    Some(_) => {
                        return Err(NetworkError::invalid(
                            "network mode",
                            format!("container:{owner}"),
                            "that sandbox is still being created",
                        ))
                    }
                    None => return Err(NetworkError::SandboxNotFound(owner.clone())),
                };
                // Share with the namespace's real owner, never chain shares.
                let root = target
                    .shares_with
                    .clone()
                    .unwrap_or_else(|| target.id.clone());
                info = SandboxInfo {
                    id: req.id.clone(),
                    mode: req.mode.clone(),
                    shares_with: Some(root),
                    ports: target.ports.clone(),
                    ..target
                };
                if let (Some(net), false) = (&info.network, req.dns_search.is_empty()) {
                    info.resolv_conf = self.resolv_conf_for(net, &req.dns_search)?;
                }
            }
            NetworkMode::Bridge(name) => {
                let net = self.network(name)?;
                let records = self.records()?;
                let existing = records
                    .iter()
                    .filter(|r| r.info.shares_with.is_none())
                    .flat_map(|r| r.info.ports.iter().map(move |p| (r.info.id.as_str(), p)));
                ports::check_conflicts(&req.ports, existing)?;
                ports::check_host_sockets_free(&req.ports)?;
                info.network = Some(name.clone());
                info.netns_path = Some(self.opts.netns_dir.join(&req.id));
                info.gateway = Some(IpAddr::V4(net.gateway));
                info.ports = req.ports.clone();
                info.resolv_conf =
                    resolv::container_resolv_conf(name, IpAddr::V4(net.gateway), &req.dns_search);
            }
        }
        state::write_json_atomic(
            &record_path,
            &SandboxRecord {
                info: info.clone(),
                ready: false,
            },
        )?;
        Ok(info)
    }

    /// Outside the lock: make the namespace (`none` and bridge modes).
    fn make_namespace(&self, req: &SandboxRequest, info: &mut SandboxInfo) -> Result<()> {
        if !matches!(req.mode, NetworkMode::None | NetworkMode::Bridge(_)) {
            return Ok(());
        }
        self.prepare_netns_dir()?;
        info.netns_path = Some(netns::create(&self.opts.netns_dir, &req.id)?);
        Ok(())
    }

    /// Outside the lock: run CNI ADD for a bridge sandbox whose namespace exists.
    fn cni_add(&self, req: &SandboxRequest, info: &mut SandboxInfo) -> Result<()> {
        let NetworkMode::Bridge(name) = &req.mode else {
            return Ok(());
        };
        let netns_path = info.netns_path.clone().ok_or_else(|| NetworkError::Netns {
            path: self.opts.netns_dir.join(&req.id),
            reason: "the sandbox has no namespace to attach".into(),
        })?;
        let net = self.network(name)?;
        let conflist_text = fs::read_to_string(&net.conflist_path)
            .map_err(|e| NetworkError::io("reading", &net.conflist_path, e))?;
        let conflist: serde_json::Value =
            serde_json::from_str(&conflist_text).map_err(|source| NetworkError::Json {
                path: net.conflist_path.clone(),
                source,
            })?;
        let conflist = networks::chain_for(&conflist, !req.ports.is_empty());
        let mut cached = CachedAttachment {
            network: name.clone(),
            sandbox_id: req.id.clone(),
            ifname: SANDBOX_IFNAME.to_string(),
            netns: netns_path.display().to_string(),
            port_mappings: req.ports.clone(),
            conflist,
            result: None,
        };
        // Written before ADD, so that a crash during ADD still leaves enough to DEL.
        let cache_path = self.dirs.result(name, &req.id);
        state::write_json_atomic(&cache_path, &cached)?;
        let result = self.cni.add_list(&cached.conflist, &attachment(&cached))?;
        cached.result = Some(result.clone());
        state::write_json_atomic(&cache_path, &cached)?;
        let parsed = CniResult::parse("bridge", &result)?;
        for ip in parsed.sandbox_ips() {
            info.ips.push(ip.address);
            if let Some(gw) = ip.gateway {
                info.gateway = Some(gw);
            }
        }
        Ok(())
    }

    /// Run CNI CHECK for the sandbox's bridge attachment (no-op for other modes).
    pub fn check_sandbox(&self, id: &str) -> Result<()> {
        let info = self
            .sandbox(id)?
            .ok_or_else(|| NetworkError::SandboxNotFound(id.to_string()))?;
        let owner = info.shares_with.as_deref().unwrap_or(id);
        if let Some(net) = &info.network {
            let cached: Option<CachedAttachment> = state::read_json(&self.dirs.result(net, owner))?;
            if let Some(c) = cached {
                let result = c.result.as_ref().ok_or_else(|| NetworkError::Netns {
                    path: PathBuf::from(&c.netns),
                    reason: format!("CNI ADD of sandbox {owner:?} never completed"),
                })?;
                self.cni.check_list(&c.conflist, &attachment(&c), result)?;
            }
        }
        Ok(())
    }

    /// Destroy a sandbox: CNI DEL, unmount and remove its namespace, forget it. Returns `false`
    /// if it did not exist. Refused while other sandboxes share its namespace.
    pub fn destroy_sandbox(&self, id: &str) -> Result<bool> {
        validate_id(id)?;
        let info = {
            let _g = self.guard();
            let Some(record) = state::read_json::<SandboxRecord>(&self.dirs.sandbox(id))? else {
                return Ok(false);
            };
            let dependents: Vec<String> = self
                .records()?
                .into_iter()
                .filter(|r| r.info.shares_with.as_deref() == Some(id))
                .map(|r| r.info.id)
                .collect();
            if !dependents.is_empty() {
                return Err(NetworkError::SandboxShared {
                    id: id.to_string(),
                    dependents,
                });
            }
            record.info
        };
        self.teardown(&info)?;
        state::remove_file(&self.dirs.sandbox(id))?;
        Ok(true)
    }

    /// Undo whatever exists of a sandbox (idempotent): DEL its attachments, delete its namespace.
    fn teardown(&self, info: &SandboxInfo) -> Result<()> {
        if info.shares_with.is_some() {
            return Ok(());
        }
        let mut first_err = None;
        for net in state::subdirs(&self.dirs.results())? {
            let path = self.dirs.result(&net, &info.id);
            if let Err(e) = self.del_cached(&path)? {
                first_err.get_or_insert(NetworkError::from(e));
            }
        }
        if let Some(path) = &info.netns_path {
            netns::delete(path)?;
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl NetworkManager {
    /// DELs the attachment cached at `path`, if there is one, and forgets it once the plugins
    /// agreed. The plugins' refusal is the inner error (the caller decides what it means); a
    /// state file that cannot be read or removed is the outer one.
    fn del_cached(&self, path: &Path) -> Result<std::result::Result<(), crate::cni::CniError>> {
        let Some(cached) = state::read_json::<CachedAttachment>(path)? else {
            return Ok(Ok(()));
        };
        match self.cni.del_list(
            &cached.conflist,
            &attachment(&cached),
            cached.result.as_ref(),
        ) {
            Ok(()) => {
                state::remove_file(path)?;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

fn attachment(c: &CachedAttachment) -> Attachment {
    // DEL after the namespace vanished: pass it anyway if the file is still there, else empty
    // (spec: plugins must tolerate a missing namespace on DEL).
    let netns = if Path::new(&c.netns).exists() && netns::is_mounted(Path::new(&c.netns)) {
        c.netns.clone()
    } else {
        String::new()
    };
    Attachment {
        container_id: c.sandbox_id.clone(),
        netns,
        ifname: c.ifname.clone(),
        port_mappings: c.port_mappings.clone(),
    }
}

/// Delete one of our bridge interfaces (in the calling namespace). Missing is fine.
fn delete_link(name: &str) -> Result<()> {
    // /sys/class/net cannot tell: sysfs shows the namespace of whoever mounted it.
    let out = Command::new("ip")
        .args(["link", "delete", name])
        .output()
        .map_err(|e| NetworkError::Command {
            command: format!("ip link delete {name}"),
            reason: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("Cannot find device") {
        return Err(NetworkError::Command {
            command: format!("ip link delete {name}"),
            reason: stderr.trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_parse() {
        assert!(DEFAULT_SUBNET.parse::<Ipv4Net>().is_ok());
        assert!(DEFAULT_POOL.parse::<Ipv4Net>().is_ok());
        let o = NetworkOptions::new("/c", "/s");
        assert_eq!(o.default_subnet.to_string(), DEFAULT_SUBNET);
        assert_eq!(o.netns_dir, PathBuf::from("/s/netns"));
    }
}

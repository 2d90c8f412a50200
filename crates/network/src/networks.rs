//! Bridge networks: their CNI conflists on disk, subnet choice, and names.
//!
//! The conflist file *is* the network's record: `<config_dir>/<name>.conflist`. Everything we need
//! later (bridge name, subnet, gateway) is read back from it, so there is no second source of truth
//! to drift.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{NetworkError, Result};

/// Name of the network created on first start and used when none is given.
pub const DEFAULT_NETWORK: &str = "zlayer0";

/// The default network's subnet. Chosen away from what usually lives on hosts: Docker
/// (172.17-31/16), Podman (10.88/16), Kubernetes pods/services (10.244/16, 10.96/12).
pub const DEFAULT_SUBNET: &str = "10.213.0.0/16";

/// Pool of /16s handed out to networks created without `--subnet` (16 networks).
pub const DEFAULT_POOL: &str = "10.224.0.0/12";

/// Name of the iptables chain (filter table) holding the inter-network isolation rules. Our
/// forward chain ([`crate::isolation::FORWARD_CHAIN`]) jumps to it first; conflists written by
/// older agents name it as the firewall plugin's "admin chain".
pub const ISOLATION_CHAIN: &str = "ZLAYER-ISOLATION";

/// A bridge network as seen by callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkInfo {
    pub name: String,
    #[schema(value_type = String)]
    pub subnet: Ipv4Net,
    #[schema(value_type = String)]
    pub gateway: Ipv4Addr,
    /// The Linux bridge interface in the agent's network namespace.
    pub bridge: String,
    #[schema(value_type = String)]
    pub conflist_path: PathBuf,
}

/// Network names double as file names and appear in iptables comments.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 64 || !ok_chars || !first_ok {
        return Err(NetworkError::invalid(
            "network name",
            name,
            "use 1-64 characters from [A-Za-z0-9_.-], starting with a letter or digit",
        ));
    }
    Ok(())
}

/// Bridge interface name for a network (Linux limits names to 15 bytes).
pub fn bridge_name(network: &str) -> String {
    if network == DEFAULT_NETWORK {
        return DEFAULT_NETWORK.to_string();
    }
    let digest = Sha256::digest(network.as_bytes());
    format!("zlbr-{}", &hex::encode(digest)[..10])
}

/// The conflist for a network: bridge (+ host-local IPAM), portmap.
///
/// - `isGateway`: containers reach the outside through the bridge address; the outgoing NAT is
///   one MASQUERADE rule per network installed by [`crate::isolation`] (not the plugin's
///   per-container `ipMasq`, which cost two iptables runs on every ADD and DEL).
/// - `hairpinMode`: a container can reach itself through a published port.
/// - portmap `snat` (default true, made explicit) marks and masquerades forwarded traffic, and
///   the plugin sets `route_localnet` on the bridge so `127.0.0.1:HOST` works from the host.
///   It only runs for sandboxes that publish ports (see [`chain_for`]).
/// - No firewall plugin: its only effect (iptables backend) is two per-container ACCEPT rules in
///   FORWARD behind an admin chain, which cost ten iptables execs on every ADD and DEL. The
///   per-network rules of [`crate::isolation`] (`ZLAYER-FORWARD`: isolation first, then accept
///   traffic from the bridge and replies/published-port traffic to it) give the same filtering
///   once per network, as Docker does.
///
/// `bridge` is normally [`bridge_name`]`(name)`; the default network's may be another than
/// `zlayer0` (see [`default_bridge_candidates`]).
pub fn conflist_on(
    bridge: &str,
    name: &str,
    subnet: Ipv4Net,
    cni_version: &str,
    ipam_dir: &Path,
) -> Value {
    let gateway = gateway_of(subnet);
    json!({
        "cniVersion": cni_version,
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet.to_string(), "gateway": gateway.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir.display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    })
}

/// Bridge interfaces the default network may use, in order: `zlayer0`, then `zlayer1` ..
/// `zlayer9` when an earlier root's bridge of that name is still in use.
pub fn default_bridge_candidates() -> impl Iterator<Item = String> {
    (0..10).map(|i| format!("zlayer{i}"))
}

/// What to do with one candidate bridge of the default network (see [`crate::bridges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeChoice {
    /// No such interface (or a bridge without address): create it on a subnet of our choice.
    Create,
    /// An idle bridge of ours left by an earlier root: use it with its subnet.
    Adopt(Ipv4Net),
    /// Not usable, and why.
    Skip(String),
}

/// Decides about a candidate bridge: adopted only when it is ours (a bridge whose one IPv4
/// address is the gateway of the default subnet or of a /16 of the pool, as our conflists make
/// them) and idle (no interface attached, no DNS server of a running agent on its address).
pub fn judge_default_bridge(
    link: Option<&crate::bridges::LinkState>,
    dns_in_use: impl Fn(Ipv4Addr) -> bool,
    default_subnet: Ipv4Net,
    pool: Ipv4Net,
) -> BridgeChoice {
    let Some(link) = link else {
        return BridgeChoice::Create;
    };
    if !link.is_bridge {
        return BridgeChoice::Skip("exists and is not a bridge".into());
    }
    if link.ports > 0 {
        return BridgeChoice::Skip(format!(
            "is in use: {} interface(s) attached (containers of another zlayer-agent root?)",
            link.ports
        ));
    }
    let addr = match link.ipv4.as_slice() {
        [] => return BridgeChoice::Create,
        [one] => *one,
        many => {
            return BridgeChoice::Skip(format!("has {} IPv4 addresses; ours have one", many.len()))
        }
    };
    let subnet = addr.trunc();
    if addr.addr() != gateway_of(subnet) {
        return BridgeChoice::Skip(format!(
            "has address {addr}, not its subnet's gateway: not made by zlayer-agent"
        ));
    }
    if subnet != default_subnet && !(pool.contains(&subnet) && subnet.prefix_len() == 16) {
        return BridgeChoice::Skip(format!(
            "has subnet {subnet}, neither the default {default_subnet} nor a /16 of the pool {pool}"
        ));
    }
    if dns_in_use(addr.addr()) {
        return BridgeChoice::Skip(format!(
            "is in use: a running daemon's DNS server listens on {}:53",
            addr.addr()
        ));
    }
    BridgeChoice::Adopt(subnet)
}

/// The chain actually run for one sandbox: the network's conflist without the plugins that would
/// do nothing for it. Every Go plugin exec costs several milliseconds of container start.
///
/// - `portmap` only when the sandbox publishes ports: with none, its ADD returns `prevResult`
///   unchanged and its DEL finds no rules to remove.
/// - `firewall` never (conflists written by older agents still list it): the per-network
///   `ZLAYER-FORWARD` rules of [`crate::isolation`] cover what it did per container.
///
/// The result is cached with the attachment and replayed for CHECK and DEL, so all three
/// commands see the same chain, as the CNI spec requires.
pub fn chain_for(conflist: &Value, publishes_ports: bool) -> Value {
    let mut chain = conflist.clone();
    if let Some(plugins) = chain.get_mut("plugins").and_then(Value::as_array_mut) {
        plugins.retain(|p| match p.get("type").and_then(Value::as_str) {
            Some("portmap") => publishes_ports,
            Some("firewall") => false,
            _ => true,
        });
    }
    chain
}

/// First usable address: the bridge's (and the DNS server's) address.
pub fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Read a network back from its conflist file.
pub fn read(path: &Path) -> Result<NetworkInfo> {
    let text = fs::read_to_string(path).map_err(|e| NetworkError::io("reading", path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|source| NetworkError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &value)
}

fn parse(path: &Path, value: &Value) -> Result<NetworkInfo> {
    let bad =
        |reason: &str| NetworkError::invalid("network config", path.display().to_string(), reason);
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"name\""))?;
    let bridge_plugin = value
        .get("plugins")
        .and_then(Value::as_array)
        .and_then(|p| {
            p.iter()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        })
        .ok_or_else(|| bad("no bridge plugin in \"plugins\""))?;
    let bridge = bridge_plugin
        .get("bridge")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("bridge plugin has no \"bridge\""))?;
    let range = bridge_plugin
        .pointer("/ipam/ranges/0/0")
        .ok_or_else(|| bad("bridge plugin has no ipam.ranges[0][0]"))?;
    let subnet: Ipv4Net = range
        .get("subnet")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("ipam range has no IPv4 \"subnet\""))?;
    let gateway = range
        .get("gateway")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| gateway_of(subnet));
    Ok(NetworkInfo {
        name: name.to_string(),
        subnet,
        gateway,
        bridge: bridge.to_string(),
        conflist_path: path.to_path_buf(),
    })
}

/// Path of a network's conflist.
pub fn conflist_path(config_dir: &Path, name: &str) -> PathBuf {
    config_dir.join(format!("{name}.conflist"))
}

/// All networks configured in `config_dir`, sorted by name.
pub fn list(config_dir: &Path) -> Result<Vec<NetworkInfo>> {
    let entries = match fs::read_dir(config_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetworkError::io("listing", config_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| NetworkError::io("listing", config_dir, e))?
            .path();
        if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
            out.push(read(&path)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Write a conflist atomically (temp file + rename), so a crash never leaves half a file.
pub fn write(path: &Path, conflist: &Value) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| NetworkError::io("creating", dir, e))?;
    crate::state::write_json_atomic(path, conflist)
}

/// Check `subnet` against the networks we have and the routes of this namespace.
pub fn check_overlap(subnet: Ipv4Net, existing: &[NetworkInfo], routes: &[Ipv4Net]) -> Result<()> {
    if subnet.prefix_len() > 30 {
        return Err(NetworkError::invalid(
            "subnet",
            subnet.to_string(),
            "too small for a bridge network (need /30 or larger)",
        ));
    }
    if subnet.network() != subnet.addr() {
        return Err(NetworkError::invalid(
            "subnet",
            subnet.to_string(),
            format!("host bits set; did you mean {}?", subnet.trunc()),
        ));
    }
    for net in existing {
        if overlaps(subnet, net.subnet) {
            return Err(NetworkError::SubnetOverlap {
                subnet: subnet.to_string(),
                other: net.subnet.to_string(),
                owner: format!("network {:?}", net.name),
            });
        }
    }
    for route in routes {
        if overlaps(subnet, *route) {
            return Err(NetworkError::SubnetOverlap {
                subnet: subnet.to_string(),
                other: route.to_string(),
                owner: "a route on this host".into(),
            });
        }
    }
    Ok(())
}

/// First /16 of `pool` that overlaps nothing.
pub fn pick_free(pool: Ipv4Net, existing: &[NetworkInfo], routes: &[Ipv4Net]) -> Result<Ipv4Net> {
    let candidates = pool
        .subnets(16.max(pool.prefix_len()))
        .map_err(|e| NetworkError::invalid("subnet pool", pool.to_string(), e.to_string()))?;
    for candidate in candidates {
        if check_overlap(candidate, existing, routes).is_ok() {
            return Ok(candidate);
        }
    }
    Err(NetworkError::NoFreeSubnet {
        pool: pool.to_string(),
    })
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Destination prefixes of the IPv4 routes of the calling thread's namespace, read from
/// `/proc/net/route`, ignoring the default route (which overlaps everything) and our own
/// bridges' routes (listed separately as networks). Only read, never changed.
pub fn host_routes(own_bridges: &[String]) -> Vec<Ipv4Net> {
    let Ok(text) = fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 || own_bridges.iter().any(|b| b == cols[0]) {
            continue;
        }
        let (Ok(dst), Ok(mask)) = (
            u32::from_str_radix(cols[1], 16),
            u32::from_str_radix(cols[7], 16),
        ) else {
            continue;
        };
        // /proc/net/route prints addresses in host (little-endian) byte order.
        let dst = Ipv4Addr::from(u32::from_be(dst));
        let prefix = u32::from_be(mask).leading_ones() as u8;
        if prefix == 0 {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(dst, prefix) {
            out.push(net);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str) -> NetworkInfo {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        NetworkInfo {
            name: name.into(),
            subnet,
            gateway: gateway_of(subnet),
            bridge: bridge_name(name),
            conflist_path: PathBuf::new(),
        }
    }

    #[test]
    fn names() {
        validate_name("zlayer0").unwrap();
        validate_name("my_net.1-a").unwrap();
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(bridge_name("zlayer0"), "zlayer0");
        let b = bridge_name("frontend");
        assert!(b.len() <= 15 && b.starts_with("zlbr-"), "{b}");
        assert_ne!(b, bridge_name("backend"));
    }

    #[test]
    fn conflist_round_trips() {
        let subnet: Ipv4Net = "10.214.0.0/16".parse().unwrap();
        let v = conflist_on(
            &bridge_name("front"),
            "front",
            subnet,
            "1.0.0",
            Path::new("/x/ipam"),
        );
        let info = parse(Path::new("/c/front.conflist"), &v).unwrap();
        assert_eq!(info.name, "front");
        assert_eq!(info.subnet, subnet);
        assert_eq!(info.gateway.to_string(), "10.214.0.1");
        assert_eq!(info.bridge, bridge_name("front"));
    }

    #[test]
    fn chain_skips_plugins_with_nothing_to_do() {
        let subnet: Ipv4Net = "10.214.0.0/16".parse().unwrap();
        let mut v = conflist_on(
            &bridge_name("front"),
            "front",
            subnet,
            "1.0.0",
            Path::new("/x/ipam"),
        );
        // As written by older agents.
        v["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "firewall", "backend": "iptables"}));
        let types = |c: &Value| -> Vec<String> {
            c["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(types(&chain_for(&v, false)), ["bridge"]);
        assert_eq!(types(&chain_for(&v, true)), ["bridge", "portmap"]);
        assert_eq!(chain_for(&v, true)["name"], "front");
    }

    #[test]
    fn default_bridge_is_adopted_only_when_ours_and_idle() {
        use crate::bridges::LinkState;
        let default: Ipv4Net = DEFAULT_SUBNET.parse().unwrap();
        let pool: Ipv4Net = DEFAULT_POOL.parse().unwrap();
        let bridge = |addrs: &[&str], ports| LinkState {
            is_bridge: true,
            ipv4: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ports,
        };
        let judge = |l: Option<&LinkState>| judge_default_bridge(l, |_| false, default, pool);
        assert_eq!(judge(None), BridgeChoice::Create);
        assert_eq!(judge(Some(&bridge(&[], 0))), BridgeChoice::Create);
        assert_eq!(
            judge(Some(&bridge(&["10.213.0.1/16"], 0))),
            BridgeChoice::Adopt(default)
        );
        assert_eq!(
            judge(Some(&bridge(&["10.225.0.1/16"], 0))),
            BridgeChoice::Adopt("10.225.0.0/16".parse().unwrap())
        );
        let skipped = |l: &LinkState| matches!(judge(Some(l)), BridgeChoice::Skip(_));
        assert!(
            skipped(&bridge(&["10.213.0.1/16"], 1)),
            "containers attached"
        );
        assert!(skipped(&bridge(&["10.213.0.7/16"], 0)), "not the gateway");
        assert!(skipped(&bridge(&["192.168.5.1/24"], 0)), "foreign subnet");
        assert!(skipped(&bridge(&["10.213.0.1/16", "10.9.0.1/16"], 0)));
        let mut veth = bridge(&["10.213.0.1/16"], 0);
        veth.is_bridge = false;
        assert!(skipped(&veth));
        // A running agent's DNS server on the address.
        let busy = judge_default_bridge(
            Some(&bridge(&["10.213.0.1/16"], 0)),
            |_| true,
            default,
            pool,
        );
        assert!(
            matches!(busy, BridgeChoice::Skip(ref w) if w.contains("DNS")),
            "{busy:?}"
        );
    }

    #[test]
    fn subnet_selection() {
        let pool: Ipv4Net = "10.214.0.0/15".parse().unwrap();
        let existing = vec![net("a", "10.214.0.0/16")];
        assert_eq!(
            pick_free(pool, &existing, &[]).unwrap().to_string(),
            "10.215.0.0/16"
        );
        let routes = vec!["10.215.3.0/24".parse().unwrap()];
        let err = pick_free(pool, &existing, &routes).unwrap_err().to_string();
        assert!(err.contains("10.214.0.0/15"), "{err}");
        let err = check_overlap("10.214.128.0/17".parse().unwrap(), &existing, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"a\""), "{err}");
        let err = check_overlap("10.9.0.1/16".parse().unwrap(), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.9.0.0/16"), "{err}");
    }
}

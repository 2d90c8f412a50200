//! What exists of a bridge interface in the calling namespace, for choosing the default
//! network's bridge on a fresh `--root`.
//!
//! A `zlayer0` left by an earlier root (a reinstall, or another daemon) keeps its address and
//! its route. Our new conflist would name the same bridge: the route made the subnet look
//! taken ("overlaps ... a route on this host"), and a different subnet on the same bridge
//! fails in the bridge plugin ("already has an IP address different from ..."). So the default
//! network either adopts such a bridge, when it is ours and idle, or uses another name.
//!
//! Read with `ip -j` (iproute2, already required for `ip link delete`): sysfs shows the
//! namespace of whoever mounted it, not necessarily the caller's.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use ipnet::Ipv4Net;
use serde_json::Value;

use crate::error::{NetworkError, Result};

/// A link as far as adoption cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// `info_kind` is `bridge`.
    pub is_bridge: bool,
    /// IPv4 addresses with their prefix (host bits kept: `10.213.0.1/16`).
    pub ipv4: Vec<Ipv4Net>,
    /// Interfaces enslaved to it (containers' veths).
    pub ports: usize,
}

/// Runs `ip ARGS` and reads its JSON output. A failure of `ip` itself is a
/// [`NetworkError::Command`] with its stderr, except that `Ok(None)` is returned when `missing_ok`
/// and the object asked about does not exist.
fn ip_json(args: &[&str], missing_ok: bool) -> Result<Option<Value>> {
    let command = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetworkError::Command {
            command: command(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if missing_ok && stderr.contains("does not exist") {
            return Ok(None);
        }
        return Err(NetworkError::Command {
            command: command(),
            reason: stderr,
        });
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| NetworkError::Command {
            command: command(),
            reason: format!("unreadable JSON: {e}"),
        })
}

/// The link `name` of the calling namespace, or `None` if there is none.
pub fn inspect(name: &str) -> Result<Option<LinkState>> {
    let Some(link) = ip_json(&["-j", "-d", "addr", "show", "dev", name], true)? else {
        return Ok(None);
    };
    let Some(link) = link.as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    let ports = ip_json(&["-j", "link", "show", "master", name], false)?
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    Ok(Some(parse_link(link, ports)))
}

fn parse_link(link: &Value, ports: usize) -> LinkState {
    let is_bridge = link.pointer("/linkinfo/info_kind").and_then(Value::as_str) == Some("bridge");
    let ipv4 = link
        .get("addr_info")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("family").and_then(Value::as_str) == Some("inet"))
        .filter_map(|a| {
            let local: Ipv4Addr = a.get("local")?.as_str()?.parse().ok()?;
            let prefix = u8::try_from(a.get("prefixlen")?.as_u64()?).ok()?;
            Ipv4Net::new(local, prefix).ok()
        })
        .collect();
    LinkState {
        is_bridge,
        ipv4,
        ports,
    }
}

/// Whether something listens on TCP `gateway:53` in this namespace: the DNS server of a
/// running agent that uses the bridge with this address.
pub fn dns_port_in_use(gateway: Ipv4Addr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::from((gateway, 53));
    let Ok(sock) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) else {
        return false;
    };
    // The same options as the DNS server's socket: only a listener makes the bind fail.
    let _ = sock.set_reuse_address(true);
    let _ = sock.set_freebind(true);
    matches!(sock.bind(&addr.into()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_kind_and_ipv4_addresses() {
        let link = json!({
            "ifname": "zlayer0",
            "linkinfo": {"info_kind": "bridge"},
            "addr_info": [
                {"family": "inet", "local": "10.213.0.1", "prefixlen": 16},
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64}
            ]
        });
        let s = parse_link(&link, 2);
        assert!(s.is_bridge);
        assert_eq!(s.ipv4, ["10.213.0.1/16".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(s.ports, 2);
        let veth = json!({"ifname": "x", "linkinfo": {"info_kind": "veth"}});
        assert!(!parse_link(&veth, 0).is_bridge);
    }
}

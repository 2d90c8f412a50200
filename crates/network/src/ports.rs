//! Published ports: parsing `-p` specs and detecting conflicts before any plugin runs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: traffic to `host_ip:host_port` (all host addresses when `host_ip` is
/// `None`) is forwarded to `container_port` in the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PortMapping {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    pub fn tcp(host_port: u16, container_port: u16) -> Self {
        PortMapping {
            host_ip: None,
            host_port,
            container_port,
            protocol: Protocol::Tcp,
        }
    }

    pub fn udp(host_port: u16, container_port: u16) -> Self {
        PortMapping {
            protocol: Protocol::Udp,
            ..Self::tcp(host_port, container_port)
        }
    }

    /// Whether both mappings would claim the same host socket.
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for PortMapping {
    /// Formats back into the `-p` syntax (`[IP:]HOST:CTR/PROTO`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

impl FromStr for PortMapping {
    type Err = NetworkError;

    /// Parses `HOST:CTR`, `HOST:CTR/tcp|udp`, `IP:HOST:CTR[/proto]` (IPv6 as `[addr]:HOST:CTR`).
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |reason: &str| NetworkError::invalid("port mapping", spec, reason);
        let (body, protocol) = match spec.rsplit_once('/') {
            Some((body, "tcp")) => (body, Protocol::Tcp),
            Some((body, "udp")) => (body, Protocol::Udp),
            Some((_, other)) => {
                return Err(bad(&format!("protocol must be tcp or udp, not {other:?}")))
            }
            None => (spec, Protocol::Tcp),
        };
        let (ip_part, ports) = if let Some(rest) = body.strip_prefix('[') {
            let (ip, after) = rest
                .split_once("]:")
                .ok_or_else(|| bad("expected [IPv6]:HOST:CTR"))?;
            (Some(ip), after)
        } else {
            match body.matches(':').count() {
                1 => (None, body),
                2 => {
                    let (ip, after) = body.split_once(':').unwrap_or_default();
                    (Some(ip), after)
                }
                _ => return Err(bad("expected HOST:CTR or IP:HOST:CTR")),
            }
        };
        let host_ip = match ip_part {
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?,
            ),
            None => None,
        };
        let (host, ctr) = ports
            .split_once(':')
            .ok_or_else(|| bad("expected HOST:CTR"))?;
        let port = |s: &str, which: &str| -> Result<u16> {
            match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad(&format!(
                    "{which} port {s:?} is not a number in 1..=65535"
                ))),
                Ok(p) => Ok(p),
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(host, "host")?,
            container_port: port(ctr, "container")?,
            protocol,
        })
    }
}

/// Reject a request whose own mappings clash, or that clash with mappings already published by
/// other sandboxes (`existing` pairs each mapping with its owner's id).
pub fn check_conflicts<'a>(
    requested: &[PortMapping],
    existing: impl IntoIterator<Item = (&'a str, &'a PortMapping)>,
) -> Result<()> {
    for (i, a) in requested.iter().enumerate() {
        if let Some(b) = requested[..i].iter().find(|b| b.conflicts_with(a)) {
            return Err(NetworkError::PortConflict {
                port: a.to_string(),
                owner: format!("this same request ({b})"),
            });
        }
    }
    for (owner, b) in existing {
        if let Some(a) = requested.iter().find(|a| a.conflicts_with(b)) {
            return Err(NetworkError::PortConflict {
                port: a.to_string(),
                owner: format!("sandbox {owner:?} ({b})"),
            });
        }
    }
    Ok(())
}

/// Reject mappings whose host socket is already taken by some other process on this host: the
/// plugin's DNAT rule would silently shadow that service otherwise.
pub fn check_host_sockets_free(requested: &[PortMapping]) -> Result<()> {
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
    for p in requested {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, p.host_port);
        let taken = match p.protocol {
            Protocol::Tcp => TcpListener::bind(addr).err(),
            Protocol::Udp => UdpSocket::bind(addr).err(),
        };
        if let Some(e) = taken.filter(|e| e.kind() == std::io::ErrorKind::AddrInUse) {
            return Err(NetworkError::PortConflict {
                port: p.to_string(),
                owner: format!("a process on the host ({e})"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        assert_eq!(
            "8080:80".parse::<PortMapping>().unwrap(),
            PortMapping::tcp(8080, 80)
        );
        assert_eq!(
            "53:5353/udp".parse::<PortMapping>().unwrap(),
            PortMapping::udp(53, 5353)
        );
        let p: PortMapping = "127.0.0.1:8080:80/tcp".parse().unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.to_string(), "127.0.0.1:8080:80/tcp");
        let p: PortMapping = "[::1]:8080:80".parse().unwrap();
        assert_eq!(p.to_string(), "[::1]:8080:80/tcp");
    }

    #[test]
    fn rejects_bad_specs_with_reason() {
        for (spec, needle) in [
            ("80", "HOST:CTR"),
            ("0:80", "host port"),
            ("8080:99999", "container port"),
            ("8080:80/sctp", "tcp or udp"),
            ("nope:8080:80", "not an IP"),
            ("1:2:3:4", "IP:HOST:CTR"),
        ] {
            let err = spec.parse::<PortMapping>().unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(spec), "{spec}: {err}");
        }
    }

    #[test]
    fn conflicts() {
        let a = PortMapping::tcp(8080, 80);
        let b = PortMapping::tcp(8080, 81);
        let u = PortMapping::udp(8080, 80);
        let local: PortMapping = "127.0.0.1:8080:80".parse().unwrap();
        let other: PortMapping = "127.0.0.2:8080:80".parse().unwrap();
        assert!(a.conflicts_with(&b));
        assert!(!a.conflicts_with(&u));
        assert!(a.conflicts_with(&local));
        assert!(!local.conflicts_with(&other));
        let err = check_conflicts(&[a, b], []).unwrap_err().to_string();
        assert!(err.contains("8080:81/tcp"), "{err}");
        let err = check_conflicts(&[u], [("web-1", &PortMapping::udp(8080, 9))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("web-1"), "{err}");
        check_conflicts(&[a, u, other], [("x", &local)]).unwrap_err();
        check_conflicts(&[other, u], [("x", &local)]).unwrap();
    }
}

//! `port CONTAINER [PRIVATE_PORT[/PROTO]]`: a container's published ports, from its network
//! sandbox (a container that is not running has none, as with docker).

use std::sync::Arc;

use super::record::ContainerState;
use crate::error::{AgentError, Result};
use crate::network::PortMapping;
use crate::Agent;

/// A container port as `port` takes it: `80` (tcp, as docker assumes) or `80/udp`.
pub fn parse_private_port(text: &str) -> Result<(u16, &'static str)> {
    let (port, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => "tcp",
        "udp" => "udp",
        other => {
            return Err(AgentError::invalid(format!(
                "invalid port {text:?}: protocol {other:?} is not tcp or udp"
            )))
        }
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((p, proto)),
        _ => Err(AgentError::invalid(format!(
            "invalid port {text:?}: {port:?} is not a port number (1-65535)"
        ))),
    }
}

/// The mappings of `ports` for `private` (all of them when `None`), ordered by container
/// port, then protocol, then host port.
pub fn select_ports(mut ports: Vec<PortMapping>, private: Option<(u16, &str)>) -> Vec<PortMapping> {
    if let Some((port, proto)) = private {
        ports.retain(|p| p.container_port == port && p.protocol.as_str() == proto);
    }
    ports.sort_by_key(|p| (p.container_port, p.protocol.as_str(), p.host_port));
    ports
}

impl Agent {
    /// `port`: published ports of a container; with `private`, those of that container port,
    /// and none of them is an error (not found) naming the port, as docker's CLI says.
    pub async fn container_ports(
        self: &Arc<Self>,
        key: &str,
        private: Option<&str>,
    ) -> Result<Vec<PortMapping>> {
        let private = private.map(parse_private_port).transpose()?;
        let key = key.to_string();
        self.run_blocking(move |a| {
            let r = a.containers().resolve(&key)?;
            // An exited container's sandbox may still be being released: its ports are gone.
            let ports = if r.state == ContainerState::Running {
                a.networking()
                    .sandbox(&r.id)
                    .map(|s| s.ports)
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let selected = select_ports(ports, private);
            match private {
                Some((port, proto)) if selected.is_empty() => Err(AgentError::not_found(format!(
                    "no public port '{port}/{proto}' published for {}",
                    r.name
                ))),
                _ => Ok(selected),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ports_parse_as_docker_takes_them() {
        assert_eq!(parse_private_port("80").unwrap(), (80, "tcp"));
        assert_eq!(parse_private_port("53/udp").unwrap(), (53, "udp"));
        assert_eq!(parse_private_port("53/UDP").unwrap(), (53, "udp"));
        let e = parse_private_port("80/sctp").unwrap_err();
        assert!(e.message.contains("sctp"), "{e}");
        for bad in ["", "x", "0", "70000", "80/"] {
            let e = parse_private_port(bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn ports_are_selected_and_ordered() {
        let all = vec![
            PortMapping::udp(5353, 53),
            PortMapping::tcp(8081, 80),
            PortMapping::tcp(8080, 80),
            PortMapping::tcp(5300, 53),
        ];
        let sorted = select_ports(all.clone(), None);
        assert_eq!(
            sorted,
            vec![
                PortMapping::tcp(5300, 53),
                PortMapping::udp(5353, 53),
                PortMapping::tcp(8080, 80),
                PortMapping::tcp(8081, 80),
            ]
        );
        assert_eq!(
            select_ports(all.clone(), Some((53, "udp"))),
            vec![PortMapping::udp(5353, 53)]
        );
        assert!(select_ports(all, Some((443, "tcp"))).is_empty());
    }
}

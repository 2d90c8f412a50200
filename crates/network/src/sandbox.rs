//! Sandbox types: a sandbox is a network namespace (or the host's, or none at all) that one or
//! more containers join. Containers of a pod all join the same sandbox; `Container(id)` mode makes
//! a new sandbox id that shares an existing sandbox's namespace (docker's `--network container:X`).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};
use crate::ports::PortMapping;

/// How a sandbox is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", content = "target", rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own namespace with only loopback.
    None,
    /// The agent's own namespace; no isolation, no CNI.
    Host,
    /// Own namespace attached to the named bridge network.
    Bridge(String),
    /// Share the namespace of the given existing sandbox.
    Container(String),
}

impl NetworkMode {
    /// Parses the CLI forms `none`, `host`, `bridge` (default network), `container:ID`, or a
    /// network name.
    pub fn parse(s: &str, default_network: &str) -> Self {
        match s {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            "bridge" | "" => NetworkMode::Bridge(default_network.to_string()),
            other => match other.strip_prefix("container:") {
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Bridge(other.to_string()),
            },
        }
    }
}

/// What the runtime asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRequest {
    /// Unique id; also the CNI container id, so `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 chars.
    pub id: String,
    pub mode: NetworkMode,
    /// Only allowed in `Bridge` mode.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// DNS search domains for the sandbox's resolv.conf (e.g. the deployment name, so that `db`
    /// resolves to `db.<deployment>` first).
    #[serde(default)]
    pub dns_search: Vec<String>,
}

impl SandboxRequest {
    pub fn new(id: impl Into<String>, mode: NetworkMode) -> Self {
        SandboxRequest {
            id: id.into(),
            mode,
            ports: Vec::new(),
            dns_search: Vec::new(),
        }
    }
}

/// A sandbox whose namespace exists but whose network is not attached yet; from
/// [`crate::NetworkManager::prepare_sandbox`], to be passed to
/// [`crate::NetworkManager::attach_sandbox`].
#[derive(Debug)]
#[must_use = "attach the sandbox (or destroy it) before starting a container in it"]
pub struct PreparedSandbox {
    pub(crate) info: SandboxInfo,
    pub(crate) req: SandboxRequest,
}

impl PreparedSandbox {
    /// What is known before the attachment: id, mode, `netns_path`, network, gateway, ports,
    /// resolv.conf. `ips` is still empty.
    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }
}

/// What the runtime gets: put `netns_path` into config.json's network namespace entry (none
/// means: stay in the host's), write `resolv_conf` to the container's /etc/resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxInfo {
    pub id: String,
    pub mode: NetworkMode,
    /// The bridge network attached, if any (also set for `Container` mode sharing a bridged one).
    pub network: Option<String>,
    #[schema(value_type = Option<String>)]
    pub netns_path: Option<PathBuf>,
    /// Addresses inside the sandbox, with prefix length.
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpNet>,
    #[schema(value_type = Option<String>)]
    pub gateway: Option<IpAddr>,
    pub ports: Vec<PortMapping>,
    pub resolv_conf: String,
    /// For `Container` mode: the sandbox whose namespace this one uses.
    pub shares_with: Option<String>,
}

impl SandboxInfo {
    /// First IPv4 address without prefix, handy for tests and DNS registration.
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.ips.iter().find_map(|n| match n.addr() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }
}

/// Sandbox ids end up in file names, CNI_CONTAINERID and iptables comments.
pub fn validate_id(id: &str) -> Result<()> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok || id.len() > 128 {
        return Err(NetworkError::invalid(
            "sandbox id",
            id,
            "use 1-128 characters from [A-Za-z0-9_.-], starting with a letter or digit",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(NetworkMode::parse("none", "zlayer0"), NetworkMode::None);
        assert_eq!(NetworkMode::parse("host", "zlayer0"), NetworkMode::Host);
        assert_eq!(
            NetworkMode::parse("bridge", "zlayer0"),
            NetworkMode::Bridge("zlayer0".into())
        );
        assert_eq!(
            NetworkMode::parse("container:abc", "zlayer0"),
            NetworkMode::Container("abc".into())
        );
        assert_eq!(
            NetworkMode::parse("front", "zlayer0"),
            NetworkMode::Bridge("front".into())
        );
    }

    #[test]
    fn ids() {
        validate_id("abc-1.2_3").unwrap();
        for bad in ["", "-a", "a/b", "../x", &"a".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }
}

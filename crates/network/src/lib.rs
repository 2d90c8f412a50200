//! zlayer-network: network sandboxes for zlayer-agent.
//!
//! A **sandbox** is a network namespace that one or more containers join (a pod shares one). The
//! runtime asks [`NetworkManager::create_sandbox`] for one *before* starting the container,
//! writes [`SandboxInfo::netns_path`] into config.json (join by path) and
//! [`SandboxInfo::resolv_conf`] into the container's /etc/resolv.conf, and calls
//! [`NetworkManager::destroy_sandbox`] after the last container of the sandbox is gone.
//!
//! Bridge networks are CNI conflists the agent writes (bridge + host-local, portmap), run with
//! Debian's containernetworking-plugins; portmap only for sandboxes that publish ports, and
//! forwarding/isolation/NAT as per-network iptables rules (module `isolation`). Each network gets a DNS server
//! ([`dns::DnsServer`]) on its bridge address, answering service names from a
//! [`dns::DnsRegistry`] the daemon keeps up to date with healthy replicas.
//!
//! ```no_run
//! # fn main() -> Result<(), zlayer_network::NetworkError> {
//! use zlayer_network::*;
//! let mgr = NetworkManager::open(NetworkOptions::system())?;
//! mgr.ensure_default()?;
//! mgr.cleanup_leaks(&Default::default())?; // on start: nothing alive yet
//! let mut req = SandboxRequest::new("c1", NetworkMode::Bridge(DEFAULT_NETWORK.into()));
//! req.ports.push("8080:80".parse()?);
//! let info = mgr.create_sandbox(&req)?;
//! println!("{:?} {:?}", info.netns_path, info.ips);
//! mgr.destroy_sandbox("c1")?;
//! # Ok(()) }
//! ```

mod bridges;
pub mod cni;
pub mod dns;
mod error;
mod isolation;
pub mod listen;
mod manager;
pub mod netns;
mod networks;
pub mod ports;
mod sandbox;
mod state;

pub use error::{NetworkError, Result};
pub use manager::{LeakReport, NetworkManager, NetworkOptions, SANDBOX_IFNAME};
pub use networks::{NetworkInfo, DEFAULT_NETWORK, DEFAULT_POOL, DEFAULT_SUBNET, ISOLATION_CHAIN};
pub use ports::{PortMapping, Protocol};
pub use sandbox::{NetworkMode, PreparedSandbox, SandboxInfo, SandboxRequest};

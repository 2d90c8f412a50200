//! `port CONTAINER [PRIVATE_PORT[/PROTO]]`, docker's output: `80/tcp -> 0.0.0.0:8080` per
//! mapping, or only `0.0.0.0:8080` when a port was named; any refusal exits 1.

use std::process::ExitCode;

use clap::Args;
use zlayer_agent::network::PortMapping;
use zlayer_api::client::encode_query;
use zlayer_api::Client;

use super::CmdResult;

#[derive(Args, Debug)]
pub struct PortArgs {
    /// The container (name, id or id prefix).
    pub container: String,
    /// Only this container port: `80` (tcp) or `53/udp`.
    pub private_port: Option<String>,
}

/// The host side of a mapping: `0.0.0.0:8080`, `[::1]:8080`.
fn host_side(p: &PortMapping) -> String {
    match p.host_ip {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", p.host_port),
        Some(ip) => format!("{ip}:{}", p.host_port),
        None => format!("0.0.0.0:{}", p.host_port),
    }
}

pub async fn port(client: &Client, args: PortArgs) -> CmdResult {
    let mut path = format!("/v1/containers/{}/port", encode_query(&args.container));
    if let Some(p) = &args.private_port {
        path.push_str(&format!("?port={}", encode_query(p)));
    }
    let ports: Vec<PortMapping> = match client.get(&path).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for p in &ports {
        if args.private_port.is_some() {
            outln!("{}", host_side(p));
        } else {
            outln!(
                "{}/{} -> {}",
                p.container_port,
                p.protocol.as_str(),
                host_side(p)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

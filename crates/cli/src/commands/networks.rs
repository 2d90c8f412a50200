//! `network create|ls|rm`.

use std::process::ExitCode;

use clap::Subcommand;
use zlayer_agent::network::NetworkInfo;
use zlayer_api::routes::networks::CreateNetwork;
use zlayer_api::Client;

use super::CmdResult;
use crate::output::{print_json, print_table, Format};

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a bridge network (containers on different networks cannot reach each other).
    Create {
        name: String,
        /// IPv4 subnet in CIDR form (default: a free /16 of 10.224.0.0/12).
        #[arg(long)]
        subnet: Option<String>,
    },
    /// List networks.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove networks (refused while containers use them).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn network(client: &Client, cmd: NetworkCommand) -> CmdResult {
    match cmd {
        NetworkCommand::Create { name, subnet } => {
            let n: NetworkInfo = client
                .post("/v1/networks", &CreateNetwork { name, subnet })
                .await?;
            outln!("{}", n.name);
        }
        NetworkCommand::Ls { format } => {
            let nets: Vec<NetworkInfo> = client.get("/v1/networks").await?;
            if format == Format::Json {
                print_json(&nets)?;
            } else {
                let rows: Vec<Vec<String>> = nets
                    .into_iter()
                    .map(|n| {
                        vec![
                            n.name,
                            n.subnet.to_string(),
                            n.gateway.to_string(),
                            n.bridge,
                        ]
                    })
                    .collect();
                print_table(&["NAME", "SUBNET", "GATEWAY", "BRIDGE"], &rows);
            }
        }
        NetworkCommand::Rm { names } => {
            return super::delete_each(client, "/v1/networks", &names).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

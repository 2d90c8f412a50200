//! `volume create|ls|rm`.

use std::process::ExitCode;

use clap::Subcommand;
use zlayer_agent::volumes::VolumeInfo;
use zlayer_api::routes::volumes::CreateVolume;
use zlayer_api::Client;

use super::CmdResult;
use crate::output::{print_json, print_table, Format};

#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a named volume.
    Create { name: String },
    /// List volumes.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove volumes (refused while a container uses them).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn volume(client: &Client, cmd: VolumeCommand) -> CmdResult {
    match cmd {
        VolumeCommand::Create { name } => {
            let v: VolumeInfo = client.post("/v1/volumes", &CreateVolume { name }).await?;
            outln!("{}", v.name);
        }
        VolumeCommand::Ls { format } => {
            let vols: Vec<VolumeInfo> = client.get("/v1/volumes").await?;
            if format == Format::Json {
                print_json(&vols)?;
            } else {
                let rows: Vec<Vec<String>> = vols
                    .into_iter()
                    .map(|v| vec![v.name, v.mountpoint])
                    .collect();
                print_table(&["VOLUME NAME", "MOUNTPOINT"], &rows);
            }
        }
        VolumeCommand::Rm { names } => {
            return super::delete_each(client, "/v1/volumes", &names).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `wclayer convert|unpack`: Windows container layers converted into the folder format the
//! Windows Host Compute Service imports. Local work (no daemon): the conversion is portable and
//! runs on Linux with a host that writes files plus a `manifest.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::CmdResult;

#[derive(Subcommand, Debug)]
pub enum WclayerCommand {
    /// Convert one layer tar (.tar, .tar.gz or .tar.zst) into DIR; without --parent it is a base layer.
    Convert {
        #[arg(long)]
        layer: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Parent layer folders, immediate parent first.
        #[arg(long = "parent")]
        parents: Vec<PathBuf>,
    },
    /// Unpack a whole Windows image (oci:DIR[:TAG] or a registry reference) into DEST.
    Unpack { image: String, dest: PathBuf },
}

pub fn wclayer(cmd: WclayerCommand) -> CmdResult {
    match cmd {
        WclayerCommand::Convert {
            layer,
            out,
            parents,
        } => zlayer_wclayer::convert_layer_cli(&layer, &out, &parents)?,
        WclayerCommand::Unpack { image, dest } => zlayer_wclayer::unpack_image_cli(&image, &dest)?,
    }
    Ok(ExitCode::SUCCESS)
}

//! `pause` and `unpause`: freeze and thaw running containers (docker's output: each name
//! on a line; a failure is reported and the rest still run, exit 1).

use clap::Args;
use zlayer_api::Client;

use super::containers::post_each;
use super::CmdResult;

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn pause(client: &Client, args: PauseArgs) -> CmdResult {
    post_each(client, &args.containers, "pause", "").await
}

pub async fn unpause(client: &Client, args: PauseArgs) -> CmdResult {
    post_each(client, &args.containers, "unpause", "").await
}

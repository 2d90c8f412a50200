//! `pause` and `unpause`: freeze and thaw running containers (docker's output: each name
//! on a line; a failure is reported and the rest still run, exit 1).

use clap::Args;
use zlayer_api::client::encode_query;
use zlayer_api::Client;

use super::{each, CmdResult};

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn pause(client: &Client, args: PauseArgs) -> CmdResult {
    post_each(client, &args.containers, "pause").await
}

pub async fn unpause(client: &Client, args: PauseArgs) -> CmdResult {
    post_each(client, &args.containers, "unpause").await
}

async fn post_each(client: &Client, containers: &[String], action: &str) -> CmdResult {
    each(containers, |c| {
        let path = format!("/v1/containers/{}/{action}", encode_query(&c));
        async move {
            client
                .post::<_, serde_json::Value>(&path, &serde_json::json!({}))
                .await
                .map(|_| c)
        }
    })
    .await
}

//! `rename CONTAINER NEW_NAME`: silent on success; any refusal is printed and exits 1, as
//! docker's CLI does.

use std::process::ExitCode;

use clap::Args;
use zlayer_api::client::encode_query;
use zlayer_api::Client;

use super::CmdResult;

#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container (name, id or id prefix).
    pub container: String,
    /// Its new name.
    pub new_name: String,
}

pub async fn rename(client: &Client, args: RenameArgs) -> CmdResult {
    let path = format!(
        "/v1/containers/{}/rename?name={}",
        encode_query(&args.container),
        encode_query(&args.new_name)
    );
    match client
        .post::<_, serde_json::Value>(&path, &serde_json::json!({}))
        .await
    {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("Error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

//! The CLI's commands, one module per resource. Each is a thin client of the daemon's API.

pub mod containers;
pub mod cp;
pub mod images;
pub mod listing;
pub mod networks;
pub mod pause;
pub mod port;
pub mod rename;
pub mod services;
pub mod top;
pub mod volumes;
pub mod wclayer;

use std::process::ExitCode;

use zlayer_api::client::ClientError;
use zlayer_api::Client;

/// What a command ends with: success, or a specific exit status (e.g. the container's).
pub type CmdResult = anyhow::Result<ExitCode>;

/// Exit status from a container's exit code (0–255; negative or larger values become 1/255).
pub fn exit_status(code: i64) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Runs `f` for each name and prints the text it returns; an error prints a line and the rest
/// still run, and the command then exits non-zero, as docker's `rm`/`stop`/`rmi` do.
pub async fn each<F, Fut>(names: &[String], f: F) -> CmdResult
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, ClientError>>,
{
    let mut failed = false;
    for n in names {
        match f(n.clone()).await {
            Ok(out) if out.is_empty() => {}
            Ok(out) => outln!("{out}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Deletes each named resource under `collection` (e.g. `/v1/volumes`), printing the names
/// removed.
pub async fn delete_each(client: &Client, collection: &str, names: &[String]) -> CmdResult {
    each(names, |n| {
        let path = format!("{collection}/{n}");
        async move { client.delete::<serde_json::Value>(&path).await.map(|_| n) }
    })
    .await
}

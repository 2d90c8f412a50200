//! The CLI's commands, one module per resource. Each is a thin client of the daemon's API.

pub mod containers;
pub mod images;
pub mod networks;
pub mod services;
pub mod volumes;
pub mod wclayer;

use std::process::ExitCode;

/// What a command ends with: success, or a specific exit status (e.g. the container's).
pub type CmdResult = anyhow::Result<ExitCode>;

/// Exit status from a container's exit code (0–255; negative or larger values become 1/255).
pub fn exit_status(code: i64) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Deletes each named resource under `collection` (e.g. `/v1/volumes`), printing the names
/// removed and an error line for each failure; like docker, one failure does not stop the rest,
/// and the command then exits non-zero.
pub async fn delete_each(
    client: &zlayer_api::Client,
    collection: &str,
    names: &[String],
) -> CmdResult {
    let mut failed = false;
    for n in names {
        match client
            .delete::<serde_json::Value>(&format!("{collection}/{n}"))
            .await
        {
            Ok(_) => println!("{n}"),
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

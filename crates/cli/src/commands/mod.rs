//! The CLI's commands, one module per resource. Each is a thin client of the daemon's API.

pub mod containers;
pub mod images;
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

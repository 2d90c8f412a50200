//! The per-container shim process (`zlayer-agent shim ...`).

use std::ffi::OsString;

/// Entry point of `zlayer-agent shim ARGS...`; returns the process exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    eprintln!("zlayer-agent shim: not available in this build (args: {args:?})");
    2
}

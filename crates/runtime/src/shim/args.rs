//! What the spawner and the shim agree on, at the bottom of the shim's layers: the shim's
//! command line ([`ShimArgs`]), where it listens ([`socket_path`]) and the one line it
//! reports ([`StartReport`]).

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Parsed `zlayer-agent shim` arguments.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub id: String,
    /// The container directory (bundle with config.json, logs, exit record).
    pub bundle: PathBuf,
    /// The state root (`--state`): libcontainer state in `runtime/`, sockets in `shims/`.
    pub state: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Give the container a stdin pipe (`run -i`).
    pub stdin: bool,
    /// Descriptor [`START_GATE_FD`] is the start gate: create the container, then wait for the
    /// spawner's `go` before starting it (see `start::pass_start_gate`).
    pub start_gate: bool,
}

/// Arguments `zlayer-agent shim` cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("non UTF-8 argument {0:?}")]
    NotUtf8(OsString),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{0}: not a number")]
    NotANumber(String),
    #[error("unknown shim argument {0:?}")]
    Unknown(String),
    #[error("{0} is required")]
    Required(&'static str),
}

/// The descriptor a gated shim gets its start gate on (`--start-gate`).
pub const START_GATE_FD: i32 = 3;

impl ShimArgs {
    /// The command-line arguments (after `shim`) describing these settings.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--state".into(),
            self.state.clone().into(),
            "--log-max-size".into(),
            self.log_max_size.to_string().into(),
            "--log-max-files".into(),
            self.log_max_files.to_string().into(),
        ];
        if self.stdin {
            v.push("--stdin".into());
        }
        if self.start_gate {
            v.push("--start-gate".into());
        }
        v
    }

    pub fn parse(args: &[OsString]) -> Result<ShimArgs, ArgsError> {
        let mut id = None;
        let mut bundle = None;
        let mut state = None;
        let mut log_max_size = crate::logs::DEFAULT_MAX_SIZE;
        let mut log_max_files = crate::logs::DEFAULT_MAX_FILES;
        let mut stdin = false;
        let mut start_gate = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let a = a.to_str().ok_or_else(|| ArgsError::NotUtf8(a.clone()))?;
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| ArgsError::MissingValue(name.to_string()))
            };
            match a {
                "--id" => id = Some(val(a)?.to_string_lossy().into_owned()),
                "--bundle" => bundle = Some(PathBuf::from(val(a)?)),
                "--state" => state = Some(PathBuf::from(val(a)?)),
                "--log-max-size" => {
                    log_max_size = val(a)?
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| ArgsError::NotANumber(a.to_string()))?
                }
                "--log-max-files" => {
                    log_max_files = val(a)?
                        .to_string_lossy()
                        .parse()
                        .map_err(|_| ArgsError::NotANumber(a.to_string()))?
                }
                "--stdin" => stdin = true,
                "--start-gate" => start_gate = true,
                other => return Err(ArgsError::Unknown(other.to_string())),
            }
        }
        Ok(ShimArgs {
            id: id.ok_or(ArgsError::Required("--id"))?,
            bundle: bundle.ok_or(ArgsError::Required("--bundle"))?,
            state: state.ok_or(ArgsError::Required("--state"))?,
            log_max_size,
            log_max_files,
            stdin,
            start_gate,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.state, &self.id)
    }

    pub fn runtime_root(&self) -> PathBuf {
        self.state.join("runtime")
    }
}

/// Where the shim of container `id` listens.
///
/// Named by the first 32 hex digits of the id (128 random bits): a unix socket path must fit
/// in 108 bytes, and the full 64-digit id would leave too little room for a `--state` path.
pub fn socket_path(state: &std::path::Path, id: &str) -> PathBuf {
    let short = &id[..id.len().min(32)];
    state.join("shims").join(format!("{short}.sock"))
}

/// The one line the shim reports to its spawner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartReport {
    pub ok: bool,
    /// Init pid of the started container.
    pub pid: Option<i32>,
    /// Pid of the long-lived shim.
    pub shim_pid: Option<i32>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub error: Option<String>,
    /// Docker's exit status for start errors: 127 command not found, 126 not executable.
    pub exit_code: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn args_roundtrip_and_errors_name_the_argument() {
        let a = ShimArgs {
            id: "abc".into(),
            bundle: "/b".into(),
            state: "/s".into(),
            log_max_size: 10,
            log_max_files: 2,
            stdin: true,
            start_gate: false,
        };
        let back = ShimArgs::parse(&a.to_args()).unwrap();
        assert_eq!(back.to_args(), a.to_args());
        assert_eq!(
            ShimArgs::parse(&os(&["--id"])).unwrap_err(),
            ArgsError::MissingValue("--id".into())
        );
        assert_eq!(
            ShimArgs::parse(&os(&["--id", "x", "--bundle", "/b"])).unwrap_err(),
            ArgsError::Required("--state")
        );
        let e = ShimArgs::parse(&os(&["--log-max-size", "big"])).unwrap_err();
        assert_eq!(e.to_string(), "--log-max-size: not a number");
        assert_eq!(
            ShimArgs::parse(&os(&["--nope"])).unwrap_err(),
            ArgsError::Unknown("--nope".into())
        );
    }
}

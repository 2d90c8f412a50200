//! One error type for the crate, so the daemon can map each failure to a clear message and
//! (later) an API status without string matching.

use std::path::PathBuf;

use crate::cni::CniError;

/// Everything that can go wrong in `zlayer-network`. Every variant names the object (file, network,
/// sandbox, port spec) it is about.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("network {0:?} does not exist")]
    NetworkNotFound(String),
    #[error("network {0:?} already exists")]
    NetworkExists(String),
    #[error("network {name:?} is in use by sandbox(es) {sandboxes:?}; remove them first")]
    NetworkInUse {
        name: String,
        sandboxes: Vec<String>,
    },
    #[error("subnet {subnet} overlaps {other} ({owner}); choose another subnet, or remove what uses that range")]
    SubnetOverlap {
        subnet: String,
        other: String,
        owner: String,
    },
    #[error(
        "no free /16 left in the subnet pool {pool}; remove unused networks or give a --subnet"
    )]
    NoFreeSubnet { pool: String },
    #[error(
        "no usable bridge for the default network zlayer0: {tried}. Stop the other zlayer-agent \
         daemon using it, or delete a bridge it left behind that no container uses \
         (`ip link delete zlayer0`), then retry"
    )]
    NoDefaultBridge { tried: String },
    #[error("sandbox {0:?} already exists")]
    SandboxExists(String),
    #[error("sandbox {0:?} does not exist")]
    SandboxNotFound(String),
    #[error(
        "sandbox {id:?} shares its network namespace with {dependents:?}; destroy those first"
    )]
    SandboxShared { id: String, dependents: Vec<String> },
    #[error("port {port} is already published by {owner}")]
    PortConflict { port: String, owner: String },
    #[error("network namespace {path}: {reason}")]
    Netns { path: PathBuf, reason: String },
    #[error("{command} failed: {reason}")]
    Command { command: String, reason: String },
}

/// Short alias used throughout the crate.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

impl NetworkError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        NetworkError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        NetworkError::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

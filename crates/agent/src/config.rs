//! The daemon's configuration file (JSON), e.g. `/etc/zlayer-agent/config.json`:
//!
//! ```json
//! { "registries": { "insecure": ["myreg.lan:5000"],
//!                   "auths": { "myreg.lan:5000": { "username": "u", "password": "p" } } },
//!   "max_concurrent_downloads": 3,
//!   "limits": { "max_containers": 1000, "max_replicas": 1000 } }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{AgentError, Result};
use crate::paths::Paths;

/// Default location of the daemon's config file; a missing file means all defaults.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/zlayer-agent/config.json";

/// Registry credentials from the daemon's config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Registry settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Registries reached over plain HTTP although not on loopback.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Credentials per registry host.
    #[serde(default)]
    pub auths: BTreeMap<String, Credentials>,
}

/// Per-node limits: what one node is willing to run, so that a typo (`replicas: 100000`) is
/// an error at once instead of a daemon that starts containers until the machine runs out.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Containers (in any state) on the node: `create`/`run` and the supervisor's replica
    /// starts are refused beyond it. `limits.max_containers`.
    pub max_containers: usize,
    /// Replicas all deployments together may ask for (the sum of their services' `replicas`,
    /// one per job or cron entry): `deploy` and `scale` are refused beyond it.
    /// `limits.max_replicas`.
    pub max_replicas: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A thousand containers is far beyond what a node usually runs (each is a shim, a
        // mount, a cgroup and often a network namespace) and far below what exhausts one.
        Self {
            max_containers: 1000,
            max_replicas: 1000,
        }
    }
}

/// Settings read from the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub registries: RegistrySettings,
    #[serde(default = "default_downloads")]
    pub max_concurrent_downloads: usize,
    #[serde(default)]
    pub limits: Limits,
}

fn default_downloads() -> usize {
    3
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            registries: RegistrySettings::default(),
            max_concurrent_downloads: default_downloads(),
            limits: Limits::default(),
        }
    }
}

impl FileConfig {
    /// Reads `path`; when `required` is false a missing file yields the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default())
            }
            Err(e) => {
                return Err(AgentError::invalid(format!(
                    "cannot read config file {}: {e}",
                    path.display()
                )))
            }
        };
        serde_json::from_str(&text).map_err(|e| {
            AgentError::invalid(format!(
                "{}:{}:{}: {}",
                path.display(),
                e.line(),
                e.column(),
                e
            ))
        })
    }
}

/// Everything the agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub paths: Paths,
    pub file: FileConfig,
    /// How to start a shim: the program and leading arguments (normally `[current_exe, "shim"]`).
    pub shim_command: Vec<PathBuf>,
}

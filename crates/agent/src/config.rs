//! The daemon's configuration file (JSON), e.g. `/etc/zlayer-agent/config.json`:
//!
//! ```json
//! { "registries": { "insecure": ["myreg.lan:5000"],
//!                   "auths": { "myreg.lan:5000": { "username": "u", "password": "p" } } },
//!   "max_concurrent_downloads": 3,
//!   "published_ports": { "max_connections": 4096, "max_connections_per_client": 256,
//!                        "idle_timeout_secs": 3600, "max_lifetime_secs": 0 } }
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

/// Settings read from the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub registries: RegistrySettings,
    #[serde(default = "default_downloads")]
    pub max_concurrent_downloads: usize,
    /// Limits of each port a service publishes (the daemon's forwarder).
    #[serde(default)]
    pub published_ports: PublishedPortSettings,
}

/// Limits of each published port of a service; see [`crate::services::PublishLimits`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishedPortSettings {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub idle_timeout_secs: u64,
    /// 0: no total limit.
    pub max_lifetime_secs: u64,
}

impl Default for PublishedPortSettings {
    fn default() -> Self {
        let d = crate::services::PublishLimits::default();
        Self {
            max_connections: d.max_connections,
            max_connections_per_client: d.max_connections_per_client,
            idle_timeout_secs: d.idle_timeout.as_secs(),
            max_lifetime_secs: d.max_lifetime.map_or(0, |l| l.as_secs()),
        }
    }
}

impl PublishedPortSettings {
    /// The forwarder's limits, or which setting is out of range.
    pub fn limits(&self) -> Result<crate::services::PublishLimits> {
        let positive = |name: &str, v: u64| {
            if v == 0 {
                Err(AgentError::invalid(format!(
                    "config: published_ports.{name} must be at least 1"
                )))
            } else {
                Ok(())
            }
        };
        positive("max_connections", self.max_connections as u64)?;
        positive(
            "max_connections_per_client",
            self.max_connections_per_client as u64,
        )?;
        positive("idle_timeout_secs", self.idle_timeout_secs)?;
        Ok(crate::services::PublishLimits {
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            max_lifetime: (self.max_lifetime_secs > 0)
                .then(|| std::time::Duration::from_secs(self.max_lifetime_secs)),
        })
    }
}

fn default_downloads() -> usize {
    3
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            registries: RegistrySettings::default(),
            max_concurrent_downloads: default_downloads(),
            published_ports: PublishedPortSettings::default(),
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
        let config: Self = serde_json::from_str(&text).map_err(|e| {
            AgentError::invalid(format!(
                "{}:{}:{}: {}",
                path.display(),
                e.line(),
                e.column(),
                e
            ))
        })?;
        config
            .published_ports
            .limits()
            .map_err(|e| AgentError::invalid(format!("{}: {}", path.display(), e.message)))?;
        Ok(config)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_port_limits_default_and_are_checked() {
        let d = FileConfig::default().published_ports.limits().unwrap();
        assert_eq!(d, crate::services::PublishLimits::default());
        let c: FileConfig = serde_json::from_str(
            r#"{"published_ports": {"idle_timeout_secs": 5, "max_lifetime_secs": 60}}"#,
        )
        .unwrap();
        let l = c.published_ports.limits().unwrap();
        assert_eq!(l.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(l.max_lifetime, Some(std::time::Duration::from_secs(60)));
        assert_eq!(l.max_connections, 4096);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"{"published_ports": {"max_connections": 0}}"#).unwrap();
        let err = FileConfig::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("published_ports.max_connections"), "{err}");
        std::fs::write(&path, r#"{"published_ports": {"max_conns": 1}}"#).unwrap();
        let err = FileConfig::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("max_conns"), "{err}");
    }
}

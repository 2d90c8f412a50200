//! The daemon's configuration file (JSON), e.g. `/etc/zlayer-agent/config.json`:
//!
//! ```json
//! { "registries": { "insecure": ["myreg.lan:5000"],
//!                   "auths": { "myreg.lan:5000": { "username": "u", "password": "p" } },
//!                   "progress_timeout_secs": 30, "document_timeout_secs": 60,
//!                   "retries": 5, "retry_budget_secs": 120 },
//!   "max_concurrent_downloads": 3, "min_free_space_mib": 256, "max_image_unpacked_mib": null,
//!   "published_ports": { "max_connections": 4096, "max_connections_per_client": 256,
//!                        "idle_timeout_secs": 3600, "max_lifetime_secs": 0 },
//!   "limits": { "max_containers": 1000, "max_replicas": 1000 } }
//! ```
//!
//! See docs/pull.md for what each registry setting bounds.

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Registries reached over plain HTTP although not on loopback.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Credentials per registry host.
    #[serde(default)]
    pub auths: BTreeMap<String, Credentials>,
    /// No response headers, or no body bytes, for this long fails the attempt (it is retried
    /// or resumed).
    #[serde(default = "default_progress_timeout")]
    pub progress_timeout_secs: u64,
    /// Time allowed for a whole manifest, index, config, token response or error body.
    #[serde(default = "default_document_timeout")]
    pub document_timeout_secs: u64,
    /// Failed attempts in a row (without progress) before a request or download gives up.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Total time one request or blob download may lose to failed attempts and backoff.
    #[serde(default = "default_retry_budget")]
    pub retry_budget_secs: u64,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure: Vec::new(),
            auths: BTreeMap::new(),
            progress_timeout_secs: default_progress_timeout(),
            document_timeout_secs: default_document_timeout(),
            retries: default_retries(),
            retry_budget_secs: default_retry_budget(),
        }
    }
}

fn default_progress_timeout() -> u64 {
    zlayer_image::registry::DEFAULT_PROGRESS_TIMEOUT_SECS
}

fn default_document_timeout() -> u64 {
    zlayer_image::registry::DEFAULT_DOCUMENT_TIMEOUT_SECS
}

fn default_retries() -> u32 {
    zlayer_image::registry::DEFAULT_RETRIES
}

fn default_retry_budget() -> u64 {
    zlayer_image::registry::DEFAULT_RETRY_BUDGET_SECS
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
    /// Unpacking a pulled image stops (naming image, layer and sizes) rather than leave less
    /// than this many MiB free on the filesystem under `--root`; 0 disables the floor.
    #[serde(default = "default_min_free_space_mib")]
    pub min_free_space_mib: u64,
    /// Cap on one image's unpacked size in MiB, all layers together; none by default.
    #[serde(default)]
    pub max_image_unpacked_mib: Option<u64>,
    /// Limits of each port a service publishes (the daemon's forwarder).
    #[serde(default)]
    pub published_ports: PublishedPortSettings,
    #[serde(default)]
    pub limits: Limits,
}

fn default_min_free_space_mib() -> u64 {
    zlayer_image::pull::DEFAULT_MIN_FREE_BYTES >> 20
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
            min_free_space_mib: default_min_free_space_mib(),
            max_image_unpacked_mib: None,
            published_ports: PublishedPortSettings::default(),
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
    fn registry_bounds_and_disk_reserve_are_read_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{}").unwrap();
        let c = FileConfig::load(&path, true).unwrap();
        assert_eq!(c.registries.progress_timeout_secs, 30);
        assert_eq!(c.registries.document_timeout_secs, 60);
        assert_eq!(c.registries.retries, 5);
        assert_eq!(c.registries.retry_budget_secs, 120);
        assert_eq!(c.min_free_space_mib, 256);
        assert_eq!(c.max_image_unpacked_mib, None);

        std::fs::write(
            &path,
            r#"{"registries": {"progress_timeout_secs": 5, "document_timeout_secs": 7,
                "retries": 2, "retry_budget_secs": 9},
                "min_free_space_mib": 1024, "max_image_unpacked_mib": 2048}"#,
        )
        .unwrap();
        let c = FileConfig::load(&path, true).unwrap();
        assert_eq!(c.registries.progress_timeout_secs, 5);
        assert_eq!(c.registries.document_timeout_secs, 7);
        assert_eq!(c.registries.retries, 2);
        assert_eq!(c.registries.retry_budget_secs, 9);
        assert_eq!(c.min_free_space_mib, 1024);
        assert_eq!(c.max_image_unpacked_mib, Some(2048));
    }

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

//! Running one CNI plugin binary and turning its answer into a result or a clear error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::{Attachment, CniCommand};

/// CNI versions this crate can produce configs for and parse results of, best first.
const OUR_VERSIONS: &[&str] = &["1.0.0", "0.4.0"];

/// A failure while invoking a CNI plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("running CNI plugin {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plugin reported an error object (spec "Error" section) or exited non-zero.
    #[error(transparent)]
    Plugin(Box<PluginFailure>),
    #[error("CNI plugin {plugin} printed an unusable result: {reason}")]
    BadResult { plugin: String, reason: String },
    #[error("invalid CNI network configuration: {0}")]
    BadConfig(String),
    #[error("the CNI plugins in {dir} support versions {supported:?}, none of which this agent speaks ({ours:?})")]
    NoCommonVersion {
        dir: String,
        supported: Vec<String>,
        ours: Vec<String>,
    },
}

/// What a failed plugin said, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
#[error("CNI plugin {plugin} {command} for network {network:?} (container {container}) failed: {msg}{}{}{}",
    code.map(|c| format!(" (code {c}{})", well_known_code(c))).unwrap_or_default(),
    if details.is_empty() { String::new() } else { format!("; details: {details}") },
    if stderr.is_empty() { String::new() } else { format!("; stderr: {stderr}") })]
pub struct PluginFailure {
    pub plugin: String,
    pub command: &'static str,
    pub network: String,
    pub container: String,
    /// The spec's error code, if the plugin printed an error object.
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

/// Names of the error codes reserved by the spec, to make messages self-explaining.
fn well_known_code(code: u64) -> &'static str {
    match code {
        1 => ": incompatible CNI version",
        2 => ": unsupported field in network configuration",
        3 => ": container unknown or does not exist",
        4 => ": invalid environment variables",
        5 => ": I/O failure",
        6 => ": failed to decode content",
        7 => ": invalid network config",
        11 => ": try again later",
        _ => "",
    }
}

/// Finds and runs plugins; remembers the CNI version negotiated with the installed plugins.
#[derive(Debug, Clone)]
pub struct CniInvoker {
    plugin_dirs: Vec<PathBuf>,
    cni_version: String,
    /// Conflists run one at a time: the plugins create their shared iptables chains with
    /// check-then-create, and concurrent first ADDs fail with "chain already exists" (found by
    /// `concurrent_creates_and_destroys_on_a_fresh_network`). iptables serialises the rule
    /// changes themselves anyway, so little parallelism is lost.
    chain_lock: Arc<Mutex<()>>,
}

impl CniInvoker {
    /// Look for plugins in `plugin_dirs` and negotiate the CNI version by asking the `bridge`
    /// plugin (`CNI_COMMAND=VERSION`) which versions it supports.
    pub fn new(plugin_dirs: Vec<PathBuf>) -> Result<Self, CniError> {
        let mut inv = CniInvoker {
            plugin_dirs,
            cni_version: OUR_VERSIONS[0].to_string(),
            chain_lock: Arc::new(Mutex::new(())),
        };
        let supported = inv.supported_versions("bridge")?;
        let chosen = OUR_VERSIONS
            .iter()
            .find(|v| supported.iter().any(|s| s == *v))
            .ok_or_else(|| CniError::NoCommonVersion {
                dir: inv.dirs_display(),
                supported: supported.clone(),
                ours: OUR_VERSIONS.iter().map(|s| s.to_string()).collect(),
            })?;
        inv.cni_version = chosen.to_string();
        Ok(inv)
    }

    pub(crate) fn chain_lock(&self) -> MutexGuard<'_, ()> {
        // Nothing is guarded but the order of plugin runs, so a poisoned lock is fine to reuse.
        self.chain_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CNI version we write into conflists.
    pub fn cni_version(&self) -> &str {
        &self.cni_version
    }

    /// `supportedVersions` reported by a plugin.
    pub fn supported_versions(&self, plugin: &str) -> Result<Vec<String>, CniError> {
        let att = Attachment {
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            port_mappings: Vec::new(),
        };
        let stdin = serde_json::json!({"cniVersion": OUR_VERSIONS[0]});
        let answer = self
            .exec(plugin, CniCommand::Version, &att, "", &stdin)?
            .ok_or_else(|| CniError::BadResult {
                plugin: plugin.to_string(),
                reason: "VERSION printed nothing".into(),
            })?;
        let versions = answer
            .get("supportedVersions")
            .and_then(Value::as_array)
            .ok_or_else(|| CniError::BadResult {
                plugin: plugin.to_string(),
                reason: format!("VERSION answer has no supportedVersions: {answer}"),
            })?;
        Ok(versions
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// Path of the plugin executable for `type`.
    pub fn find_plugin(&self, plugin: &str) -> Result<PathBuf, CniError> {
        let valid = !plugin.is_empty() && !plugin.contains('/') && plugin != "." && plugin != "..";
        if valid {
            for dir in &self.plugin_dirs {
                let candidate = dir.join(plugin);
                if is_executable(&candidate) {
                    return Ok(candidate);
                }
            }
        }
        Err(CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: self.dirs_display(),
        })
    }

    fn dirs_display(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Run one plugin. `Ok(None)` when it succeeded without printing anything (DEL, CHECK).
    pub(super) fn exec(
        &self,
        plugin: &str,
        command: CniCommand,
        att: &Attachment,
        network: &str,
        stdin: &Value,
    ) -> Result<Option<Value>, CniError> {
        let path = self.find_plugin(plugin)?;
        let mut cmd = Command::new(&path);
        // Inherit the environment (the plugins exec iptables/ip via PATH) but not stray CNI_*
        // variables of whoever started the daemon.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(key);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        }
        cmd.env("CNI_COMMAND", command.as_str())
            .env("CNI_PATH", self.dirs_display())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if command != CniCommand::Version {
            cmd.env("CNI_CONTAINERID", &att.container_id)
                .env("CNI_NETNS", &att.netns)
                .env("CNI_IFNAME", &att.ifname);
        }
        let t0 = std::time::Instant::now();
        let mut child = cmd.spawn().map_err(|source| CniError::Spawn {
            path: path.clone(),
            source,
        })?;
        let input = serde_json::to_vec(stdin).map_err(|e| CniError::BadConfig(e.to_string()))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit before reading stdin (e.g. on an env error); its answer matters
            // more than our write error, so a broken pipe is ignored here.
            let _ = pipe.write_all(&input);
        }
        let out = child.wait_with_output().map_err(|source| CniError::Spawn {
            path: path.clone(),
            source,
        })?;
        tracing::debug!(plugin, command = command.as_str(), network, elapsed = ?t0.elapsed(), status = %out.status, "CNI plugin ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let parsed: Option<Value> = if stdout.trim().is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&stdout).map_err(|e| CniError::BadResult {
                    plugin: plugin.to_string(),
                    reason: format!("{e}; output was {:?}", truncate(&stdout)),
                })?,
            )
        };
        if out.status.success() {
            return Ok(parsed);
        }
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let msg = match field("msg") {
            m if m.is_empty() => format!("exited with {}", out.status),
            m => m,
        };
        Err(CniError::Plugin(Box::new(PluginFailure {
            plugin: plugin.to_string(),
            command: command.as_str(),
            network: network.to_string(),
            container: att.container_id.clone(),
            code: parsed
                .as_ref()
                .and_then(|v| v.get("code"))
                .and_then(Value::as_u64),
            msg,
            details: field("details"),
            stderr: truncate(&stderr),
        })))
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

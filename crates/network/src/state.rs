//! On-disk state under the state directory, all plain JSON written atomically:
//!
//! - `sandboxes/<id>.json`: one [`SandboxRecord`] per sandbox, written *before* the namespace and
//!   CNI ADD exist, so a crash at any point leaves a record that leak cleanup can act on.
//! - `cni-results/<network>/<id>.json`: one [`CachedAttachment`] per (network, sandbox) with the
//!   conflist used for ADD and its result, so DEL works after restarts and config changes.
//! - `ipam/`: host-local's allocation store (its `dataDir`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{NetworkError, Result};
use crate::ports::PortMapping;
use crate::sandbox::SandboxInfo;

/// Persisted sandbox: what was asked for and what it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub info: SandboxInfo,
    /// True once the namespace exists and CNI ADD succeeded.
    pub ready: bool,
}

/// The (network, sandbox) attachment data DEL needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedAttachment {
    pub network: String,
    pub sandbox_id: String,
    pub ifname: String,
    pub netns: String,
    pub port_mappings: Vec<PortMapping>,
    pub conflist: Value,
    /// `None` if ADD never completed (crash mid-ADD): DEL then runs without prevResult.
    pub result: Option<Value>,
}

/// Paths of the state layout.
#[derive(Debug, Clone)]
pub struct StateDirs {
    pub root: PathBuf,
}

impl StateDirs {
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    pub fn sandbox(&self, id: &str) -> PathBuf {
        self.sandboxes().join(format!("{id}.json"))
    }
    pub fn results(&self) -> PathBuf {
        self.root.join("cni-results")
    }
    pub fn result(&self, network: &str, id: &str) -> PathBuf {
        self.results().join(network).join(format!("{id}.json"))
    }
    pub fn ipam(&self) -> PathBuf {
        self.root.join("ipam")
    }
}

/// Write JSON to a temp file in the same directory, then rename it over `path`: readers and a
/// crashed daemon's successor see the old or the new file, never half of one.
///
/// No fsync, on purpose (it cost ~2.5 ms per file here, on every sandbox start): this state
/// describes namespaces and leases that die with the boot anyway; after a power loss a record may
/// come back empty, and [`crate::NetworkManager::cleanup_leaks`] removes unreadable records.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| NetworkError::io("creating", dir, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let data = serde_json::to_vec_pretty(value).map_err(|source| NetworkError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut f = fs::File::create(&tmp).map_err(|e| NetworkError::io("creating", &tmp, e))?;
    f.write_all(&data)
        .map_err(|e| NetworkError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| NetworkError::io("renaming into place", path, e))
}

/// Read JSON; `Ok(None)` if the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| NetworkError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetworkError::io("reading", path, e)),
    }
}

/// Remove a file; a missing file is fine.
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("removing", path, e)),
    }
}

/// Files in `dir` with extension `json`, as (stem, path); empty if `dir` is missing.
pub fn json_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetworkError::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| NetworkError::io("listing", dir, e))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            out.push((stem.to_string(), path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// Sub-directories of `dir` by name; empty if `dir` is missing.
pub fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetworkError::io("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetworkError::io("listing", dir, e))?;
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

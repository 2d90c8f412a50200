//! Named volumes: directories under `--root/volumes/<name>/_data`, created on first use or by
//! `volume create`, removed only by `volume rm` (never while a container uses them).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// A named volume as listed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeInfo {
    pub name: String,
    pub mountpoint: String,
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_volume_name(name: &str) -> Result<()> {
    if crate::containers::names::is_docker_name(name, 2) {
        Ok(())
    } else {
        Err(AgentError::invalid(format!(
            "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters"
        )))
    }
}

/// The data directory of volume `name`, created if missing.
pub fn ensure_volume_dir(volumes_dir: &Path, name: &str) -> Result<PathBuf> {
    validate_volume_name(name)?;
    let dir = volumes_dir.join(name).join("_data");
    std::fs::create_dir_all(&dir)
        .map_err(|e| AgentError::internal(format!("creating volume {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Every volume under `volumes_dir`, sorted by name.
pub fn list(volumes_dir: &Path) -> Result<Vec<VolumeInfo>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(volumes_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(AgentError::internal(format!(
                "reading {}: {e}",
                volumes_dir.display()
            )))
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_volume_name(&name).is_ok() && entry.path().join("_data").is_dir() {
            out.push(VolumeInfo {
                mountpoint: entry.path().join("_data").display().to_string(),
                name,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes volume `name` and its data.
pub fn remove(volumes_dir: &Path, name: &str) -> Result<()> {
    validate_volume_name(name)?;
    let dir = volumes_dir.join(name);
    if !dir.join("_data").is_dir() {
        return Err(AgentError::not_found(format!("no such volume: {name}")));
    }
    std::fs::remove_dir_all(&dir)
        .map_err(|e| AgentError::internal(format!("removing volume {}: {e}", dir.display())))
}

impl crate::Agent {
    /// `volume create`: the volume, created unless it existed.
    pub async fn create_volume(self: &std::sync::Arc<Self>, name: &str) -> Result<VolumeInfo> {
        let name = name.to_string();
        self.run_blocking(move |a| {
            let dir = ensure_volume_dir(&a.config().paths.volumes(), &name)?;
            Ok(VolumeInfo {
                name,
                mountpoint: dir.display().to_string(),
            })
        })
        .await
    }

    /// `volume ls`.
    pub async fn list_volumes(self: &std::sync::Arc<Self>) -> Result<Vec<VolumeInfo>> {
        self.run_blocking(|a| list(&a.config().paths.volumes()))
            .await
    }

    /// `volume rm`: refused while a container (running or not) names the volume.
    pub async fn remove_volume(self: &std::sync::Arc<Self>, name: &str) -> Result<()> {
        let name = name.to_string();
        self.run_blocking(move |a| {
            let users: Vec<String> = a
                .containers()
                .list()?
                .into_iter()
                .filter(|c| crate::containers::request::named_volumes_of(&c.spec).contains(&name))
                .map(|c| c.name)
                .collect();
            if !users.is_empty() {
                return Err(AgentError::conflict(format!(
                    "volume {name} is in use by container(s) {}; remove them first",
                    users.join(", ")
                )));
            }
            remove(&a.config().paths.volumes(), &name)
        })
        .await
    }
}

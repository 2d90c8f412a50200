//! `launch`: everything between "create this container" and a running container, as one
//! step with full rollback: container directory, overlay rootfs ([`crate::rootfs`]), bundle
//! ([`crate::bundle`]), shim ([`crate::spawn`]). On failure nothing of it remains.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::bundle::{self, ContainerSpec, GeneratedBundle, RunOptions};
use crate::client::ClientError;
use crate::rootfs;
use crate::spawn::{spawn_shim, ShimHandle, SpawnOptions};

/// What [`launch`] needs.
pub struct LaunchRequest<'a> {
    pub id: &'a str,
    /// `--root/containers/<id>`; created by launch, must not exist yet.
    pub container_dir: &'a Path,
    pub state_dir: &'a Path,
    /// The image's snapshot directories, topmost first.
    pub layers: &'a [PathBuf],
    pub image: &'a ImageConfiguration,
    pub options: &'a RunOptions,
    pub shim_cmd: &'a [OsString],
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// See [`SpawnOptions::start_gate`].
    pub start_gate: Option<BorrowedFd<'a>>,
}

/// A started container.
#[derive(Debug, Clone)]
pub struct Launched {
    pub handle: ShimHandle,
    pub bundle: GeneratedBundle,
}

/// Creates and starts a container: container directory, overlay rootfs, bundle, shim.
/// On any failure everything created is removed again (mount, directory, shim state),
/// and the error carries docker's exit status (see [`ClientError::exit_code`]).
pub fn launch(req: &LaunchRequest<'_>) -> Result<Launched, ClientError> {
    if req.container_dir.exists() {
        return Err(ClientError::Start {
            id: req.id.to_string(),
            message: format!(
                "container directory {} already exists",
                req.container_dir.display()
            ),
            exit_code: None,
        });
    }
    // 0700: config.json, logs and the upper layer hold the container's secrets and data.
    // The rootfs dirs below keep their modes: the upper dir's mode is the container's `/`.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(req.container_dir)
        .map_err(|source| ClientError::Io {
            path: req.container_dir.to_path_buf(),
            source,
        })?;
    let res = (|| {
        let fs = rootfs::mount_overlay(req.container_dir, req.layers, false)?;
        let bundle = bundle::generate(&ContainerSpec {
            id: req.id,
            container_dir: req.container_dir,
            rootfs: &fs.target,
            image: req.image,
            options: req.options,
        })?;
        bundle::write_bundle(req.container_dir, &fs.target, &bundle)?;
        if req.options.read_only {
            rootfs::remount_read_only(&fs.target)?;
        }
        let mut so = SpawnOptions::new(
            req.shim_cmd.to_vec(),
            req.id,
            req.container_dir,
            req.state_dir,
        );
        so.log_max_size = req.log_max_size;
        so.log_max_files = req.log_max_files;
        so.stdin = req.options.interactive;
        so.start_gate = req.start_gate.map(|fd| fd.as_raw_fd());
        let handle = spawn_shim(&so)?;
        Ok(Launched { handle, bundle })
    })();
    if res.is_err() {
        let _ = rootfs::remove(req.container_dir);
    }
    res
}

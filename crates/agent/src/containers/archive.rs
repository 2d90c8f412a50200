//! `cp`: a container's files as a tar stream out, and a tar stream unpacked in, like docker's
//! archive API (`GET`/`PUT /containers/{id}/archive?path=`). Both work on running containers
//! (through their init's root, volumes included) and stopped ones (their overlay rootfs, which
//! stays mounted until the container is removed).
//!
//! Containment: every path inside the container is resolved beneath its root with
//! `openat2(RESOLVE_IN_ROOT)` by the image crate's unpacker root (reading: `unpack::export`,
//! writing: `unpack::apply_layer`), so no symlink in the container (or in the archive) can make
//! a copy read or write outside the container's root filesystem.
//!
//! The docker path rules (trailing `/.`, destination exists or not, renaming) are the
//! client's, as in docker: the agent archives one path and unpacks into one directory.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use zlayer_image::unpack::{self, export, ApplyOptions, WhiteoutMode};

use super::record::ContainerState;
use crate::chunk_io::{ChunkReader, ChunkWriter};
use crate::error::{AgentError, Result};
use crate::Agent;

/// Chunks in flight between the blocking tar writer/reader and the connection.
const CHUNK_BUFFER: usize = 16;

/// What a path inside a container is (docker's `ContainerPathStat`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PathStat {
    /// The last component of the path (`/` for the root).
    pub name: String,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// The target, when the path is a symlink that was not followed.
    pub link_target: Option<String>,
    pub is_dir: bool,
}

impl From<export::PathStat> for PathStat {
    fn from(s: export::PathStat) -> Self {
        Self {
            is_dir: s.is_dir(),
            name: s.name,
            mode: s.mode,
            size: s.size,
            mtime: s.mtime,
            link_target: s.link_target,
        }
    }
}

/// What unpacking an archive into a container did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CopyResult {
    /// Entries of the archive.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// The tar of a path in a container, in chunks, ending early with an error if reading fails.
/// Dropping it stops the reader.
pub struct ArchiveStream {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
}

impl futures_core::Stream for ArchiveStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.chunks.poll_recv(cx)
    }
}

/// Where a container's root is reached from the daemon.
enum ContainerRoot {
    /// `/proc/PID/root` of its running init, opened and checked (see `container_root`).
    Live(std::os::fd::OwnedFd),
    /// Its overlay mount on the host.
    Overlay(PathBuf),
}

impl ContainerRoot {
    /// A path naming the root for as long as `self` lives.
    fn path(&self) -> PathBuf {
        match self {
            ContainerRoot::Live(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            ContainerRoot::Overlay(p) => p.clone(),
        }
    }
}

/// An error reading or writing `path` in container `name`, with the status docker gives it.
fn path_error(name: &str, path: &Path, e: io::Error) -> AgentError {
    let what = format!("{} in container {name}", path.display());
    match e.raw_os_error() {
        Some(libc::ENOENT) => AgentError::not_found(format!("no such file or directory: {what}")),
        Some(libc::ENOTDIR) => AgentError::invalid(format!("not a directory: {what}")),
        Some(libc::ELOOP) => AgentError::invalid(format!("too many levels of symlinks: {what}")),
        Some(libc::EROFS) => AgentError::invalid(format!(
            "the container's root filesystem is read-only: {what}"
        )),
        _ => AgentError::internal(format!("{what}: {e}")).with_source(e),
    }
}

fn check_path(path: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(AgentError::invalid("no path given (path=)"));
    }
    if path.contains('\0') {
        return Err(AgentError::invalid("the path contains a NUL byte"));
    }
    Ok(PathBuf::from(path))
}

impl Agent {
    /// The container's root as its processes see it, and its name.
    ///
    /// A running container's root is read through `/proc/PID/root`, so its volumes, tmpfs
    /// mounts and generated `/etc/hosts` are copied as docker copies them. That directory is
    /// opened once and checked to be the container's own overlay (same device and inode as the
    /// mount on the host): a pid that was reused by another process meanwhile is never used.
    /// Otherwise (stopped, or exiting right now) the overlay rootfs on the host is used, which
    /// stays mounted until the container is removed; refused when it is not mounted (reading
    /// the empty mount point would copy nothing, silently).
    fn container_root(&self, key: &str) -> Result<(ContainerRoot, String)> {
        use std::os::unix::fs::MetadataExt;
        let r = self.containers().resolve(key)?;
        let dir = self.container_dir(&r.id);
        let rootfs = dir.join(zlayer_runtime::rootfs::ROOTFS_DIR);
        let mount = match (std::fs::metadata(&dir), std::fs::metadata(&rootfs)) {
            (Ok(d), Ok(m)) if d.dev() != m.dev() => m,
            _ => {
                return Err(AgentError::conflict(format!(
                    "the root filesystem of container {} is not mounted",
                    r.name
                )))
            }
        };
        let live = r
            .pid
            .filter(|_| r.state == ContainerState::Running)
            .and_then(|pid| std::fs::File::open(format!("/proc/{pid}/root")).ok())
            .filter(|f| {
                f.metadata()
                    .is_ok_and(|m| m.dev() == mount.dev() && m.ino() == mount.ino())
            });
        let root = match live {
            Some(f) => ContainerRoot::Live(std::os::fd::OwnedFd::from(f)),
            None => ContainerRoot::Overlay(rootfs),
        };
        Ok((root, r.name))
    }

    /// `cp`'s stat: what `path` is inside the container (`follow_link`: a final symlink is
    /// followed, inside the container's root).
    pub async fn container_path_stat(
        self: &Arc<Self>,
        key: &str,
        path: &str,
        follow_link: bool,
    ) -> Result<PathStat> {
        let key = key.to_string();
        let path = check_path(path)?;
        self.run_blocking(move |a| {
            let (root, name) = a.container_root(&key)?;
            export::stat_in_root(&root.path(), &path, follow_link)
                .map(PathStat::from)
                .map_err(|e| path_error(&name, &path, e))
        })
        .await
    }

    /// `cp CONTAINER:PATH ...`: `path` as a tar stream whose top entry is named after the
    /// path's last component, with the path's stat. Errors about the path come before any
    /// byte of the stream.
    pub async fn copy_from_container(
        self: &Arc<Self>,
        key: &str,
        path: &str,
        follow_link: bool,
    ) -> Result<(PathStat, ArchiveStream)> {
        let stat = self.container_path_stat(key, path, follow_link).await?;
        let (rootfs, _) = {
            let key = key.to_string();
            self.run_blocking(move |a| a.container_root(&key)).await?
        };
        let path = check_path(path)?;
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter::new(tx.clone(), "the reader went away");
            let res = export::write_tar_in_root(&rootfs.path(), &path, follow_link, &mut w)
                .and_then(|_| w.flush());
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    tracing::warn!(path = %path.display(), "copying out of a container: {e}");
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        Ok((stat, ArchiveStream { chunks: rx }))
    }

    /// `cp ... CONTAINER:DIR`: unpacks the tar `archive` into directory `dir` of the container,
    /// which must exist. `preserve_owner` (`cp -a`) keeps the archive's uid/gid; otherwise
    /// everything is owned by root, as docker does.
    pub async fn copy_to_container<S>(
        self: &Arc<Self>,
        key: &str,
        dir: &str,
        archive: S,
        preserve_owner: bool,
    ) -> Result<CopyResult>
    where
        S: futures_core::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let dir = check_path(dir)?;
        let key = key.to_string();
        let (tx, rx) = mpsc::channel(CHUNK_BUFFER);
        let feeding = tokio::spawn(feed(archive, tx));
        let result = self
            .run_blocking(move |a| {
                let (root, name) = a.container_root(&key)?;
                // The node's free-space floor holds for copies as for pulls: a client
                // streaming without end fills the disk only down to it.
                let min_free = a.config().file.min_free_space_mib.saturating_mul(1 << 20);
                let reader = ChunkReader::new(rx);
                unpack_into(&root.path(), &name, &dir, reader, preserve_owner, min_free)
            })
            .await;
        feeding.abort();
        result
    }
}

/// Forwards the request body into the blocking reader's channel.
async fn feed<S>(mut archive: S, tx: mpsc::Sender<io::Result<Bytes>>)
where
    S: futures_core::Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut archive).poll_next(cx)).await {
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
}

/// Resolves `dir` inside `rootfs` and applies the archive beneath it: the unpacker's own root
/// is then that directory (held open by fd, so it cannot be swapped for a symlink meanwhile).
fn unpack_into(
    rootfs: &Path,
    name: &str,
    dir: &Path,
    archive: impl Read,
    preserve_owner: bool,
    min_free: u64,
) -> Result<CopyResult> {
    let st = export::stat_in_root(rootfs, dir, true).map_err(|e| path_error(name, dir, e))?;
    if !st.is_dir() {
        return Err(AgentError::invalid(format!(
            "not a directory: {} in container {name}",
            dir.display()
        )));
    }
    let fd = export::open_dir_in_root(rootfs, dir).map_err(|e| path_error(name, dir, e))?;
    let target = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let opts = ApplyOptions {
        // `.wh.` names are ordinary files here; Apply mode at least never creates whiteout
        // devices in the merged view.
        whiteouts: WhiteoutMode::Apply,
        preserve_owner,
        sync: false,
        space: Some(Arc::new(unpack::SpaceGuard::new(min_free, None))),
        ..ApplyOptions::default()
    };
    // The archive comes from the client: whatever fails in it (a malformed tar, a refused
    // entry, a full disk) is reported to the client as the reason its copy failed.
    let stats = unpack::apply_layer(&target, archive, &opts).map_err(|e| {
        AgentError::invalid(format!(
            "copying into {} of container {name}: {e}",
            dir.display()
        ))
    })?;
    drop(fd);
    Ok(CopyResult {
        entries: stats.entries,
        bytes: stats.bytes,
    })
}

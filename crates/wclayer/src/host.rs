//! The one seam between portable conversion and the machine: everything that needs Win32 or
//! the Host Compute Service (vmcompute.dll) goes through [`LayerHost`].
//!
//! Paths are given as a root directory plus a `/`-separated layer-relative name, like
//! hcsshim's "relative to a root handle" helpers: the Windows host turns them into `\\?\` paths,
//! the Linux host keeps the relative names for its manifest.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backup_stream::BackupSink;
use crate::error::Result;
use crate::fileinfo::FileBasicInfo;

/// What a staged (pre-import) file holds, so the Linux manifest can say how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StagedKind {
    /// A `Files/` file: u32 LE attributes, then a framed backup stream.
    AttrHeaderBackupStream,
    /// A `.$wcidirs$` record of a directory: same bytes as above.
    DirRecord,
}

/// How a restore target is to be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Create (or open) a directory rather than a file.
    pub is_dir: bool,
    /// Apply SECURITY records (`BackupWrite`'s `bProcessSecurity`); hives are restored without.
    pub process_security: bool,
    /// Replace an existing file of the same name (a utility VM file cloned from the parent).
    pub replace_existing: bool,
}

/// The layer being written, announced before the first entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerKind {
    /// No parents: files land at their final paths.
    Base,
    /// Parents, immediate parent first; files are staged under `staging`.
    Diff {
        staging: PathBuf,
        parents: Vec<PathBuf>,
    },
}

/// Operations that need the host OS. Implemented by [`crate::linux_host::LinuxHost`] (files +
/// a manifest) and, on Windows, [`crate::windows_host::WindowsHost`].
pub trait LayerHost: Send + Sync {
    /// A new layer folder is about to be written.
    fn begin_layer(&self, layer: &Path, kind: &LayerKind) -> Result<()>;
    /// Creates one directory (its parent exists); no metadata.
    fn create_dir(&self, root: &Path, rel: &str) -> Result<()>;
    /// Creates a new file for raw bytes, with `info` applied (times, attributes).
    fn create_staged_file(
        &self,
        root: &Path,
        rel: &str,
        info: &FileBasicInfo,
        kind: StagedKind,
    ) -> Result<Box<dyn Write + Send>>;
    /// Creates a file or directory with `info` applied and returns a sink that restores a backup
    /// stream into it (`BackupWrite`).
    fn restore(
        &self,
        root: &Path,
        rel: &str,
        info: &FileBasicInfo,
        opts: RestoreOptions,
    ) -> Result<Box<dyn BackupSink>>;
    /// Sets times and attributes of an existing path (directory times after children changed).
    fn set_basic_info(&self, root: &Path, rel: &str, info: &FileBasicInfo) -> Result<()>;
    /// Makes `link_root/name` a hard link to `target_root/target`, replacing an existing `name`.
    fn hard_link(
        &self,
        target_root: &Path,
        target: &str,
        link_root: &Path,
        name: &str,
    ) -> Result<()>;
    /// Removes a file or empty directory after the import (a tombstone); `Ok(false)` if absent.
    fn remove_tombstone(&self, root: &Path, rel: &str) -> Result<bool>;
    /// Removes a path and everything below it (utility VM removals); it must exist.
    fn remove_all(&self, root: &Path, rel: &str) -> Result<()>;
    /// Whether a path exists (without following reparse points); used for parent lookups.
    fn exists(&self, root: &Path, rel: &str) -> Result<bool>;
    /// Converts SDDL text into a self-relative security descriptor.
    fn sddl_to_security_descriptor(&self, entry: &str, sddl: &str) -> Result<Vec<u8>>;
    /// vmcompute `ImportLayer` of `staging` into `layer`, parents identified by `NameToGuid` of
    /// their folder names.
    fn import_layer(&self, layer: &Path, staging: &Path, parents: &[PathBuf]) -> Result<()>;
    /// vmcompute `ProcessBaseImage`.
    fn process_base_layer(&self, layer: &Path) -> Result<()>;
    /// vmcompute `ProcessUtilityImage` on `layer/UtilityVM`.
    fn process_utility_vm(&self, uvm: &Path) -> Result<()>;
    /// Deletes a directory tree (the staging folder, or a failed layer).
    fn delete_tree(&self, path: &Path) -> Result<()>;
    /// The layer is complete (the Linux host writes its manifest here).
    fn finish_layer(&self, layer: &Path) -> Result<()>;
}

/// A sink that drops a backup stream: the `UtilityVM` directory entry of a diff layer carries
/// no data that is kept (the folder is created, its metadata comes from the parent image).
pub(crate) struct DiscardSink;

impl BackupSink for DiscardSink {
    fn write_record(
        &mut self,
        header: &crate::backup_stream::StreamHeader,
        data: &mut dyn std::io::Read,
    ) -> Result<()> {
        crate::backup_stream::copy_exact(
            data,
            &mut std::io::sink(),
            header.size,
            Path::new("UtilityVM"),
        )
    }

    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

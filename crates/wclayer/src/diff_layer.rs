//! Diff layers (with parents): entries are staged in the folder `ImportLayer` consumes, then
//! imported; removals and hard links wait until after the import.
//!
//! Staging format: a directory `D` is a real directory plus a sibling file `D.$wcidirs$`; a
//! `Files/` file and every `.$wcidirs$` file hold the u32 LE attributes followed by the backup
//! stream; a `Hives/` file holds its plain content (restored through `BackupWrite`). Staged
//! files carry the entry's times with attributes 0 — the attributes travel in the header.
//! `UtilityVM/...` is written straight into the layer folder.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::backup_stream::{BackupSink, FramedSink};
use crate::dispatch::LayerWriter;
use crate::error::{Error, IoContext, Result};
use crate::fileinfo::FileBasicInfo;
use crate::host::{DiscardSink, LayerHost, LayerKind, RestoreOptions, StagedKind};
use crate::winpath::{has_prefix, parent};

/// Suffix of the file that carries a staged directory's metadata.
pub const DIR_RECORD_SUFFIX: &str = ".$wcidirs$";

const FILES: &str = "Files";
const HIVES: &str = "Hives";
const UTILITY_VM: &str = "UtilityVM";
const UTILITY_VM_FILES: &str = "UtilityVM/Files";

/// A hard link to make after the import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLink {
    /// Layer-relative name of the new link.
    pub name: String,
    /// Layer-relative name of the existing file.
    pub target: String,
    /// The layer folder holding `target`: this layer or one of the parents.
    pub target_root: PathBuf,
}

/// Writes one diff layer. Call [`DiffLayerWriter::commit`] once every entry is written and the
/// content verified, or [`DiffLayerWriter::discard`] to throw it away.
pub struct DiffLayerWriter<'h> {
    host: &'h dyn LayerHost,
    layer: PathBuf,
    staging: PathBuf,
    parents: Vec<PathBuf>,
    /// Names added by this layer (files, dirs, links), exact case.
    added: HashSet<String>,
    /// Staging directories known to exist.
    staged_dirs: HashSet<String>,
    tombstones: Vec<String>,
    pending_links: Vec<PendingLink>,
    /// Directories whose times are re-applied after the import, in creation order.
    dirs: Vec<(String, FileBasicInfo)>,
    has_utility_vm: bool,
}

impl<'h> DiffLayerWriter<'h> {
    /// Starts a diff layer in `layer` (created), staging under `staging` (created, must not
    /// exist). `parents`: immediate parent first.
    pub fn new(
        host: &'h dyn LayerHost,
        layer: &Path,
        staging: &Path,
        parents: &[PathBuf],
    ) -> Result<Self> {
        if parents.is_empty() {
            return Err(Error::Metadata {
                what: layer.display().to_string(),
                reason: "a diff layer needs at least one parent layer".into(),
            });
        }
        std::fs::create_dir(layer).ctx("creating layer folder", layer)?;
        std::fs::create_dir(staging).ctx("creating staging folder", staging)?;
        host.begin_layer(
            layer,
            &LayerKind::Diff {
                staging: staging.to_path_buf(),
                parents: parents.to_vec(),
            },
        )?;
        Ok(DiffLayerWriter {
            host,
            layer: layer.to_path_buf(),
            staging: staging.to_path_buf(),
            parents: parents.to_vec(),
            added: HashSet::new(),
            staged_dirs: HashSet::new(),
            tombstones: Vec::new(),
            pending_links: Vec::new(),
            dirs: Vec::new(),
            has_utility_vm: false,
        })
    }

    /// Tombstones collected so far (layer-relative, in tar order).
    pub fn tombstones(&self) -> &[String] {
        &self.tombstones
    }

    /// Hard links waiting for the import.
    pub fn pending_links(&self) -> &[PendingLink] {
        &self.pending_links
    }

    /// Creates missing staging directories above `name` (tars normally list them first; ones
    /// that do not get a plain directory without a `.$wcidirs$` record).
    fn ensure_staged_parents(&mut self, name: &str) -> Result<()> {
        let dir = parent(name);
        if dir.is_empty() || self.staged_dirs.contains(dir) {
            return Ok(());
        }
        self.ensure_staged_parents(dir)?;
        if !self.host.exists(&self.staging, dir)? {
            self.host.create_dir(&self.staging, dir)?;
        }
        self.staged_dirs.insert(dir.to_string());
        Ok(())
    }

    fn ensure_layer_parents(&self, name: &str) -> Result<()> {
        let dir = parent(name);
        if dir.is_empty() || self.host.exists(&self.layer, dir)? {
            return Ok(());
        }
        self.ensure_layer_parents(dir)?;
        self.host.create_dir(&self.layer, dir)
    }

    fn staged_with_header(
        &self,
        rel: &str,
        info: &FileBasicInfo,
        kind: StagedKind,
    ) -> Result<Box<dyn BackupSink>> {
        let raw =
            self.host
                .create_staged_file(&self.staging, rel, &info.without_attributes(), kind)?;
        let path = self.staging.join(rel);
        let mut out = BufWriter::with_capacity(64 * 1024, raw);
        out.write_all(&info.file_attributes.to_le_bytes())
            .ctx("writing attribute header of", &path)?;
        Ok(Box::new(FramedSink::new(out, path)))
    }

    /// Imports the staged layer and finishes it: tombstones, pending links, directory times,
    /// the utility VM, then the staging folder is deleted.
    pub fn commit(self) -> Result<()> {
        let host = self.host;
        host.import_layer(&self.layer, &self.staging, &self.parents)?;
        for name in &self.tombstones {
            host.remove_tombstone(&self.layer, name)?;
        }
        for link in &self.pending_links {
            host.hard_link(&link.target_root, &link.target, &self.layer, &link.name)?;
        }
        for (name, info) in self.dirs.iter().rev() {
            host.set_basic_info(&self.layer, name, info)?;
        }
        if self.has_utility_vm {
            host.process_utility_vm(&self.layer.join(UTILITY_VM))?;
        }
        host.delete_tree(&self.staging)?;
        host.finish_layer(&self.layer)
    }

    /// Removes the staging folder and the partial layer.
    pub fn discard(self) -> Result<()> {
        self.host.delete_tree(&self.staging)?;
        self.host.delete_tree(&self.layer)
    }
}

impl LayerWriter for DiffLayerWriter<'_> {
    fn layer_root(&self) -> &Path {
        &self.layer
    }

    fn add(&mut self, name: &str, info: &FileBasicInfo) -> Result<Box<dyn BackupSink>> {
        if name == UTILITY_VM {
            if !self.has_utility_vm && !self.host.exists(&self.layer, UTILITY_VM)? {
                self.host.create_dir(&self.layer, UTILITY_VM)?;
            }
            self.has_utility_vm = true;
            self.added.insert(name.to_string());
            return Ok(Box::new(DiscardSink));
        }
        if has_prefix(name, UTILITY_VM) {
            if !self.has_utility_vm {
                return Err(Error::entry(
                    name,
                    "utility VM entry before the UtilityVM directory",
                ));
            }
            if !has_prefix(name, UTILITY_VM_FILES) {
                return Err(Error::entry(
                    name,
                    "invalid utility VM layer: only UtilityVM/Files may be under UtilityVM",
                ));
            }
            self.ensure_layer_parents(name)?;
            if info.is_dir() {
                self.dirs.push((name.to_string(), *info));
            }
            let sink = self.host.restore(
                &self.layer,
                name,
                info,
                RestoreOptions {
                    is_dir: info.is_dir(),
                    process_security: true,
                    replace_existing: true,
                },
            )?;
            self.added.insert(name.to_string());
            return Ok(sink);
        }
        let in_files = has_prefix(name, FILES);
        let in_hives = has_prefix(name, HIVES);
        if !in_files && !in_hives {
            return Err(Error::entry(
                name,
                "diff layer entries must be under Files/, Hives/ or UtilityVM/",
            ));
        }
        self.ensure_staged_parents(name)?;
        let sink = if info.is_dir() {
            self.host.create_dir(&self.staging, name)?;
            self.staged_dirs.insert(name.to_string());
            if in_files {
                self.dirs.push((name.to_string(), *info));
            }
            let record = format!("{name}{DIR_RECORD_SUFFIX}");
            self.staged_with_header(&record, info, StagedKind::DirRecord)?
        } else if in_hives {
            self.host.restore(
                &self.staging,
                name,
                &info.without_attributes(),
                RestoreOptions {
                    is_dir: false,
                    process_security: false,
                    replace_existing: false,
                },
            )?
        } else {
            self.staged_with_header(name, info, StagedKind::AttrHeaderBackupStream)?
        };
        self.added.insert(name.to_string());
        Ok(sink)
    }

    fn add_link(&mut self, name: &str, target: &str) -> Result<()> {
        let linkable = |n: &str| has_prefix(n, FILES) || has_prefix(n, UTILITY_VM_FILES);
        if !linkable(name) {
            return Err(Error::entry(
                name,
                "hard link name must be under Files/ or UtilityVM/Files/",
            ));
        }
        if !linkable(target) {
            return Err(Error::entry(
                name,
                format!("hard link target {target:?} must be under Files/ or UtilityVM/Files/"),
            ));
        }
        let target_root = if self.added.contains(target) {
            Some(self.layer.clone())
        } else if has_prefix(target, FILES) {
            let mut found = None;
            for p in &self.parents {
                if self.host.exists(p, target)? {
                    found = Some(p.clone());
                    break;
                }
            }
            found
        } else if self.host.exists(&self.layer, target)? {
            // A utility VM file already in this layer folder.
            Some(self.layer.clone())
        } else {
            None
        };
        let Some(target_root) = target_root else {
            return Err(Error::MissingLinkTarget {
                name: name.to_string(),
                target: target.to_string(),
                parents: self.parents.len(),
            });
        };
        self.pending_links.push(PendingLink {
            name: name.to_string(),
            target: target.to_string(),
            target_root,
        });
        self.added.insert(name.to_string());
        Ok(())
    }

    fn remove(&mut self, name: &str, entry: &str) -> Result<()> {
        if has_prefix(name, FILES) {
            self.tombstones.push(name.to_string());
            Ok(())
        } else if has_prefix(name, UTILITY_VM_FILES) {
            if !self.has_utility_vm {
                return Err(Error::entry(
                    entry,
                    "utility VM removal before the UtilityVM directory",
                ));
            }
            if !self.host.exists(&self.layer, name)? {
                return Err(Error::entry(
                    entry,
                    format!("removes {name:?}, which is not in the utility VM"),
                ));
            }
            self.host.remove_all(&self.layer, name)
        } else {
            Err(Error::entry(
                entry,
                "invalid tombstone: only Files/ and UtilityVM/Files/ entries can be removed",
            ))
        }
    }

    fn opaque(&mut self, entry: &str) -> Result<()> {
        // Windows layers express deletions as tombstones only; an opaque marker carries no
        // information the import could use, so diff layers ignore it.
        tracing::debug!(entry, "ignoring opaque whiteout in a Windows diff layer");
        Ok(())
    }
}

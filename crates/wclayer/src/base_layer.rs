//! Base layers (no parents): every entry becomes a real file at its own path in the layer
//! folder, restored through `BackupWrite`; hard links are made at once; removals are an error.
//! Afterwards directory times are re-applied (children first), then `ProcessBaseImage` and,
//! with a utility VM, `ProcessUtilityImage` run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::backup_stream::BackupSink;
use crate::dispatch::LayerWriter;
use crate::error::{Error, IoContext, Result};
use crate::fileinfo::FileBasicInfo;
use crate::host::{LayerHost, LayerKind, RestoreOptions};
use crate::winpath::parent;

/// Writes one base layer; [`BaseLayerWriter::commit`] after verification.
pub struct BaseLayerWriter<'h> {
    host: &'h dyn LayerHost,
    layer: PathBuf,
    added: HashSet<String>,
    dirs: Vec<(String, FileBasicInfo)>,
    has_utility_vm: bool,
}

impl<'h> BaseLayerWriter<'h> {
    /// Starts a base layer in `layer` (created, must not exist).
    pub fn new(host: &'h dyn LayerHost, layer: &Path) -> Result<Self> {
        std::fs::create_dir(layer).ctx("creating layer folder", layer)?;
        host.begin_layer(layer, &LayerKind::Base)?;
        Ok(BaseLayerWriter {
            host,
            layer: layer.to_path_buf(),
            added: HashSet::new(),
            dirs: Vec::new(),
            has_utility_vm: false,
        })
    }

    fn ensure_parents(&mut self, name: &str) -> Result<()> {
        let dir = parent(name);
        if dir.is_empty() || self.added.contains(dir) || self.host.exists(&self.layer, dir)? {
            return Ok(());
        }
        self.ensure_parents(dir)?;
        self.host.create_dir(&self.layer, dir)
    }

    /// Re-applies directory times, runs the base and utility VM processing, finishes the layer.
    pub fn commit(self) -> Result<()> {
        for (name, info) in self.dirs.iter().rev() {
            self.host.set_basic_info(&self.layer, name, info)?;
        }
        self.host.process_base_layer(&self.layer)?;
        if self.has_utility_vm {
            self.host
                .process_utility_vm(&self.layer.join("UtilityVM"))?;
        }
        self.host.finish_layer(&self.layer)
    }

    /// Deletes the partial layer.
    pub fn discard(self) -> Result<()> {
        self.host.delete_tree(&self.layer)
    }
}

impl LayerWriter for BaseLayerWriter<'_> {
    fn layer_root(&self) -> &Path {
        &self.layer
    }

    fn add(&mut self, name: &str, info: &FileBasicInfo) -> Result<Box<dyn BackupSink>> {
        if name == "UtilityVM/Files" {
            self.has_utility_vm = true;
        }
        self.ensure_parents(name)?;
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
                replace_existing: false,
            },
        )?;
        self.added.insert(name.to_string());
        Ok(sink)
    }

    fn add_link(&mut self, name: &str, target: &str) -> Result<()> {
        if !self.added.contains(target) && !self.host.exists(&self.layer, target)? {
            return Err(Error::MissingLinkTarget {
                name: name.to_string(),
                target: target.to_string(),
                parents: 0,
            });
        }
        self.ensure_parents(name)?;
        self.host
            .hard_link(&self.layer, target, &self.layer, name)?;
        self.added.insert(name.to_string());
        Ok(())
    }

    fn remove(&mut self, _name: &str, entry: &str) -> Result<()> {
        Err(Error::BaseLayerTombstone {
            entry: entry.to_string(),
        })
    }

    fn opaque(&mut self, entry: &str) -> Result<()> {
        Err(Error::BaseLayerTombstone {
            entry: entry.to_string(),
        })
    }
}

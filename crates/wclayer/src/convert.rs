//! One layer tar → one layer folder, in two phases: write every entry, then (once the caller
//! has verified the content hashes) commit — import and post-import steps — or discard.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::base_layer::BaseLayerWriter;
use crate::diff_layer::DiffLayerWriter;
use crate::dispatch::{write_layer, LayerWriter};
use crate::error::{Error, Result};
use crate::host::LayerHost;

/// The staging folder used for a diff layer: a hidden sibling of the layer folder, so it is on
/// the same volume (the import and the links need that) and obviously related.
pub fn staging_path_for(layer: &Path) -> Result<PathBuf> {
    let name = layer.file_name().ok_or_else(|| Error::Metadata {
        what: layer.display().to_string(),
        reason: "layer folder has no name".into(),
    })?;
    let mut staged = std::ffi::OsString::from(".");
    staged.push(name);
    staged.push(".wcstaging");
    Ok(layer.with_file_name(staged))
}

/// A layer whose entries are written but which is not yet imported.
pub enum PreparedLayer<'h> {
    Base(BaseLayerWriter<'h>),
    Diff(DiffLayerWriter<'h>),
}

impl<'h> PreparedLayer<'h> {
    /// Creates the layer folder (and for diff layers the staging folder). No parents = base.
    pub fn create(host: &'h dyn LayerHost, layer: &Path, parents: &[PathBuf]) -> Result<Self> {
        Ok(if parents.is_empty() {
            PreparedLayer::Base(BaseLayerWriter::new(host, layer)?)
        } else {
            let staging = staging_path_for(layer)?;
            PreparedLayer::Diff(DiffLayerWriter::new(host, layer, &staging, parents)?)
        })
    }

    fn writer(&mut self) -> &mut dyn LayerWriter {
        match self {
            PreparedLayer::Base(w) => w,
            PreparedLayer::Diff(w) => w,
        }
    }

    /// Writes all entries of `tar_stream` (up to the end-of-archive marker).
    pub fn write_tar<R: Read>(&mut self, tar_stream: R, host: &dyn LayerHost) -> Result<()> {
        write_layer(tar_stream, self.writer(), host)
    }

    /// Imports and finishes the layer.
    pub fn commit(self) -> Result<()> {
        match self {
            PreparedLayer::Base(w) => w.commit(),
            PreparedLayer::Diff(w) => w.commit(),
        }
    }

    /// Throws the partial layer away.
    pub fn discard(self) -> Result<()> {
        match self {
            PreparedLayer::Base(w) => w.discard(),
            PreparedLayer::Diff(w) => w.discard(),
        }
    }
}

/// Converts one uncompressed layer tar into `layer` and commits it at once (no content hashes to
/// check). On failure the partial layer and staging folder are removed and the first error is
/// returned.
pub fn convert_layer<R: Read>(
    tar_stream: R,
    host: &dyn LayerHost,
    layer: &Path,
    parents: &[PathBuf],
) -> Result<()> {
    let mut prepared = PreparedLayer::create(host, layer, parents)?;
    match prepared.write_tar(tar_stream, host) {
        Ok(()) => prepared.commit(),
        Err(e) => {
            if let Err(cleanup) = prepared.discard() {
                tracing::warn!(error = %cleanup, "could not remove the partial layer");
            }
            Err(e)
        }
    }
}

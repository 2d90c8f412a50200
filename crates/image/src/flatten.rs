//! `image unpack REF DIR`: an image's flattened root filesystem as plain files (whiteouts
//! applied, no overlay markers), as `umoci unpack` or `docker export` of the image gives,
//! for debugging or for another runtime.
//!
//! Layers are applied straight from the content store one after another into DIR with
//! [`WhiteoutMode::Apply`], each checked against its DiffID; snapshots are neither needed nor
//! created.

use std::path::Path;

use crate::layer::Compression;
use crate::store::{apply_blob, io_err, ImageStore, Result, StoreError};
use crate::unpack::{ApplyOptions, WhiteoutMode};

/// What [`unpack_image_to`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenReport {
    pub layers: usize,
    pub entries: u64,
    /// Bytes of file data written (later layers may overwrite earlier ones).
    pub bytes: u64,
}

/// Writes the flattened rootfs of image `query` into `dir`, which must be absent or empty.
pub fn unpack_image_to(store: &ImageStore, query: &str, dir: &Path) -> Result<FlattenReport> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(StoreError::Io {
                    op: "unpack into",
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "directory is not empty",
                    ),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        Err(e) => return Err(io_err("read directory", dir)(e)),
    }
    let _lease = store.lease()?;
    let rec = store.resolve(query)?;
    let manifest = store.manifest(&rec.manifest_digest)?;
    let config = store.config(&rec.manifest_digest.to_string())?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers.len() {
        return Err(StoreError::BadImage {
            what: "image config",
            digest: rec.config_digest.clone(),
            detail: format!(
                "rootfs.diff_ids lists {} layers but the manifest has {}",
                diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Apply,
        ..Default::default()
    };
    let mut report = FlattenReport::default();
    for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
        let diff_id = crate::Digest::parse(diff_id).map_err(|e| StoreError::BadImage {
            what: "image config",
            digest: rec.config_digest.clone(),
            detail: format!("rootfs.diff_ids: {e}"),
        })?;
        let compression = Compression::from_media_type(&layer.media_type)?;
        let blob = store.content().open_blob(&layer.digest)?;
        // One syncfs at the end is enough.
        let layer_opts = ApplyOptions {
            sync: false,
            ..opts.clone()
        };
        let (stats, _) = apply_blob(blob, compression, &layer.digest, &diff_id, dir, &layer_opts)?;
        report.layers += 1;
        report.entries += stats.entries;
        report.bytes += stats.bytes;
    }
    crate::unpack::syncfs_path(dir).map_err(io_err("syncfs", dir))?;
    Ok(report)
}

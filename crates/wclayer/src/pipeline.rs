//! The whole image: for each layer, base first — fetch (with `urls` fallback), verify digest and
//! size, decompress by media type, verify the DiffID against the config, convert, import.
//! Everything streams: blob → digest hasher → decoder → DiffID hasher → tar → files.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::convert::PreparedLayer;
use crate::decompress::{compression_for_media_type, Decoder};
use crate::digest::{drain, parse_digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::host::LayerHost;
use crate::source::{
    open_layer_blob, BlobFetch, LayerSource, RegistryAuth, ResolvedLayerDescriptor, WindowsImage,
};

/// Largest image config we read into memory.
const MAX_CONFIG: u64 = 16 << 20;
/// Read-ahead between the decoder and the tar parser.
const TAR_BUFFER: usize = 256 * 1024;

/// The unpacked layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedImage {
    /// Layer folders child-to-parent: topmost layer first, base last — the order HCS wants.
    pub chain: Vec<PathBuf>,
    /// The folder holding the layer folders (`dest_root`).
    pub root: PathBuf,
}

/// Where the utility VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UvmBootFiles {
    /// The layer folder that carries the boot files.
    pub layer: PathBuf,
    /// `UtilityVM/Files/EFI/Microsoft/Boot/bootmgfw.efi` in it.
    pub boot_manager: PathBuf,
    /// `UtilityVM/SystemTemplate.vhdx` in it (made by `ProcessUtilityImage`).
    pub system_template: PathBuf,
}

/// The first layer, searching from the base, with a utility VM boot manager.
pub fn locate_uvm_boot_files(chain: &[PathBuf]) -> Result<UvmBootFiles> {
    for layer in chain.iter().rev() {
        let boot_manager = layer.join("UtilityVM/Files/EFI/Microsoft/Boot/bootmgfw.efi");
        if boot_manager.is_file() {
            return Ok(UvmBootFiles {
                layer: layer.clone(),
                boot_manager,
                system_template: layer.join("UtilityVM/SystemTemplate.vhdx"),
            });
        }
    }
    Err(Error::NotHyperVBootable {
        searched: chain.len(),
    })
}

/// Fetches and parses the config's `rootfs.diff_ids`.
fn read_diff_ids(
    source: &dyn LayerSource,
    image: &WindowsImage,
    auth: &RegistryAuth,
) -> Result<Vec<String>> {
    let cfg = &image.config;
    let BlobFetch::Found(r) = source.fetch_blob(&image.reference, auth, &cfg.digest, cfg.size)?
    else {
        return Err(Error::Fetch {
            what: format!("config {} of {}", cfg.digest, image.reference),
            reason: "not found".into(),
        });
    };
    let mut bytes = Vec::new();
    r.take(MAX_CONFIG)
        .read_to_end(&mut bytes)
        .ctx("reading image config", &cfg.digest)?;
    let actual = zlayer_image::Digest::of_bytes(&bytes).to_string();
    if actual != cfg.digest {
        return Err(Error::DigestMismatch {
            expected: cfg.digest.clone(),
            actual,
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Metadata {
        what: format!("config {}", cfg.digest),
        reason: e.to_string(),
    })?;
    if let Some(os) = v.get("os").and_then(|o| o.as_str()) {
        if os != "windows" {
            return Err(Error::Metadata {
                what: format!("config {}", cfg.digest),
                reason: format!("image os is {os:?}, not windows"),
            });
        }
    }
    let ids = v
        .pointer("/rootfs/diff_ids")
        .and_then(|d| d.as_array())
        .ok_or_else(|| Error::Metadata {
            what: format!("config {}", cfg.digest),
            reason: "no rootfs.diff_ids".into(),
        })?;
    ids.iter()
        .map(|d| {
            let s = d.as_str().ok_or_else(|| Error::Metadata {
                what: format!("config {}", cfg.digest),
                reason: "a diff_id is not a string".into(),
            })?;
            parse_digest(s)?;
            Ok(s.to_string())
        })
        .collect()
}

/// Unpacks a Windows image into `dest_root/<chain id hex>` folders with the platform's host
/// ([`crate::LinuxHost`] off Windows). See [`unpack_windows_image_with`].
pub fn unpack_windows_image(
    source: &dyn LayerSource,
    image: &WindowsImage,
    auth: &RegistryAuth,
    layers: &[ResolvedLayerDescriptor],
    dest_root: &Path,
) -> Result<UnpackedImage> {
    #[cfg(windows)]
    let host = crate::windows_host::WindowsHost::new()?;
    #[cfg(not(windows))]
    let host = crate::linux_host::LinuxHost::new();
    unpack_windows_image_with(&host, source, image, auth, layers, dest_root)
}

/// Marker folder recording which layer folders are complete, so a re-run reuses them.
const COMPLETE_DIR: &str = ".complete";

/// [`unpack_windows_image`] with an explicit host.
pub fn unpack_windows_image_with(
    host: &dyn LayerHost,
    source: &dyn LayerSource,
    image: &WindowsImage,
    auth: &RegistryAuth,
    layers: &[ResolvedLayerDescriptor],
    dest_root: &Path,
) -> Result<UnpackedImage> {
    let diff_ids = read_diff_ids(source, image, auth)?;
    if diff_ids.len() != layers.len() {
        return Err(Error::Metadata {
            what: format!("config {}", image.config.digest),
            reason: format!(
                "{} diff_ids for {} manifest layers",
                diff_ids.len(),
                layers.len()
            ),
        });
    }
    let complete_dir = dest_root.join(COMPLETE_DIR);
    std::fs::create_dir_all(&complete_dir).ctx("creating", &complete_dir)?;
    let mut parents: Vec<PathBuf> = Vec::new(); // immediate parent first
    let diff_digests = diff_ids
        .iter()
        .map(|d| parse_digest(d))
        .collect::<Result<Vec<_>>>()?;
    let chain_ids = zlayer_image::chain_ids(&diff_digests);
    for (i, (desc, chain_id)) in layers.iter().zip(chain_ids).enumerate() {
        let name = chain_id.hex().to_string();
        let layer_dir = dest_root.join(&name);
        let marker = complete_dir.join(&name);
        if marker.exists() && layer_dir.is_dir() {
            tracing::info!(layer = %desc.digest, dir = %layer_dir.display(), "layer already unpacked");
        } else {
            if layer_dir.exists() {
                host.delete_tree(&layer_dir)?;
            }
            let staging = crate::convert::staging_path_for(&layer_dir)?;
            if staging.exists() {
                host.delete_tree(&staging)?;
            }
            tracing::info!(index = i, layer = %desc.digest, dir = %layer_dir.display(), "unpacking Windows layer");
            unpack_layer(
                host,
                source,
                image,
                auth,
                desc,
                &diff_ids[i],
                &layer_dir,
                &parents,
            )?;
            std::fs::write(&marker, desc.digest.as_bytes()).ctx("writing", &marker)?;
        }
        parents.insert(0, layer_dir);
    }
    Ok(UnpackedImage {
        chain: parents,
        root: dest_root.to_path_buf(),
    })
}

/// One layer: fetch → verify → convert → commit.
#[allow(clippy::too_many_arguments)]
pub fn unpack_layer(
    host: &dyn LayerHost,
    source: &dyn LayerSource,
    image: &WindowsImage,
    auth: &RegistryAuth,
    desc: &ResolvedLayerDescriptor,
    diff_id: &str,
    layer_dir: &Path,
    parents: &[PathBuf],
) -> Result<()> {
    parse_digest(&desc.digest)?;
    let compression = compression_for_media_type(&desc.media_type)?;
    let blob = open_layer_blob(source, &image.reference, auth, desc)?;
    let compressed = HashingReader::new(blob);
    let blob_hash = compressed.state();
    let plain = HashingReader::new(Decoder::new(compressed, compression)?);
    let diff_hash = plain.state();
    let mut tar_stream = BufReader::with_capacity(TAR_BUFFER, plain);

    let mut prepared = PreparedLayer::create(host, layer_dir, parents)?;
    // Read the tar, then everything after its end marker: the DiffID covers the whole stream.
    let converted = prepared.write_tar(&mut tar_stream, host).and_then(|()| {
        drain(&mut tar_stream)
            .ctx("reading the rest of layer", &desc.digest)
            .map(drop)
    });
    // Whatever happened, read the blob to its end so its digest can be checked: a corrupt blob
    // is the root cause worth reporting even when it first surfaced as a tar or inflate error.
    let mut rest = tar_stream.into_inner().into_inner().into_inner();
    let drained = drain(&mut rest);

    let verdict = (|| {
        let (actual, size) = blob_hash.finish();
        if drained.is_ok() && actual != desc.digest {
            return Err(Error::DigestMismatch {
                expected: desc.digest.clone(),
                actual,
            });
        }
        converted?;
        drained.ctx("reading the rest of blob", &desc.digest)?;
        if size != desc.size {
            return Err(Error::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: size,
            });
        }
        let (actual_diff, _) = diff_hash.finish();
        if actual_diff != diff_id {
            return Err(Error::DiffIdMismatch {
                digest: desc.digest.clone(),
                expected: diff_id.to_string(),
                actual: actual_diff,
            });
        }
        Ok(())
    })();
    match verdict {
        Ok(()) => prepared.commit(),
        Err(e) => {
            if let Err(cleanup) = prepared.discard() {
                tracing::warn!(error = %cleanup, "could not remove the partial layer");
            }
            Err(e)
        }
    }
}

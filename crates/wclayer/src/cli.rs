//! Entry points for the `zlayer-agent wclayer ...` subcommands (the CLI crate wires them into
//! clap): convert one layer tar, or unpack a whole image.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::convert::convert_layer;
use crate::decompress::{compression_from_magic, Decoder};
use crate::linux_host::LinuxHost;
use crate::pipeline::unpack_windows_image;
use crate::source::{OciLayoutSource, RegistryAuth};

/// `wclayer convert --layer LAYER.tar[.gz|.zst] --out DIR [--parent DIR]...`: converts one
/// layer with the Linux host (staged files at their staged paths plus `DIR/manifest.json`).
/// Compression is recognised by magic bytes; no parents means a base layer.
pub fn convert_layer_cli(layer: &Path, out: &Path, parents: &[PathBuf]) -> anyhow::Result<()> {
    let file = File::open(layer).with_context(|| format!("opening layer {}", layer.display()))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader
        .fill_buf()
        .with_context(|| format!("reading layer {}", layer.display()))?;
    let compression = compression_from_magic(head);
    for p in parents {
        if !p.is_dir() {
            bail!("parent layer {} is not a directory", p.display());
        }
    }
    let decoder = Decoder::new(reader, compression)?;
    let host = LinuxHost::new();
    convert_layer(
        BufReader::with_capacity(256 * 1024, decoder),
        &host,
        out,
        parents,
    )
    .with_context(|| format!("converting {} into {}", layer.display(), out.display()))?;
    Ok(())
}

/// Splits `oci:DIR[:TAG]`.
fn parse_oci_ref(image: &str) -> Option<(PathBuf, Option<String>)> {
    let rest = image.strip_prefix("oci:")?;
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') => {
            Some((PathBuf::from(dir), Some(tag.to_string())))
        }
        _ => Some((PathBuf::from(rest), None)),
    }
}

/// `wclayer unpack IMAGE DEST`: the whole pipeline. IMAGE is `oci:DIR[:TAG]` (a local OCI
/// layout) or a registry reference (windows/amd64 is picked from an index; credentials come
/// from `~/.docker/config.json`); prints the layer chain, topmost first.
pub fn unpack_image_cli(image: &str, dest: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let unpacked = if let Some((dir, tag)) = parse_oci_ref(image) {
        let source = OciLayoutSource::open(&dir)?;
        let (img, layers) = source.resolve(tag.as_deref())?;
        unpack_windows_image(&source, &img, &RegistryAuth::Anonymous, &layers, dest)?
    } else {
        unpack_from_registry(image, dest)?
    };
    for layer in &unpacked.chain {
        println!("{}", layer.display());
    }
    Ok(())
}

#[cfg(unix)]
fn unpack_from_registry(image: &str, dest: &Path) -> anyhow::Result<crate::UnpackedImage> {
    use crate::registry_source::RegistrySource;
    let auth = RegistryAuth::Anonymous;
    let source = RegistrySource::new(Default::default(), image, &auth)?;
    let (img, layers) = source.resolve(image)?;
    Ok(unpack_windows_image(&source, &img, &auth, &layers, dest)?)
}

#[cfg(not(unix))]
fn unpack_from_registry(image: &str, _dest: &Path) -> anyhow::Result<crate::UnpackedImage> {
    bail!(
        "image {image:?}: registry references need the zlayer-image registry client, which \
         does not build on this platform yet; use oci:DIR[:TAG]"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_refs() {
        assert_eq!(parse_oci_ref("oci:/a/b"), Some(("/a/b".into(), None)));
        assert_eq!(
            parse_oci_ref("oci:/a/b:v1"),
            Some(("/a/b".into(), Some("v1".into())))
        );
        assert_eq!(parse_oci_ref("docker.io/x"), None);
    }
}

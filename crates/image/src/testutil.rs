//! Test helpers: build small images straight into a content store.

use std::io::Write;

use serde_json::json;

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::layer::Compression;

pub(crate) use crate::unpack::tests::{is_root, RawTar, E};

pub(crate) struct TestImage {
    pub manifest: Digest,
    pub config: Digest,
    /// (blob digest, diff id) per layer, base first.
    pub layers: Vec<(Digest, Digest)>,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
}

pub(crate) fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

/// Builds an image (config with `config` as its `config` section) from layer tars, without
/// storing it.
pub(crate) fn build_image(
    layers: &[Vec<u8>],
    c: Compression,
    config: serde_json::Value,
) -> TestImage {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut out_layers = Vec::new();
    let mut blobs = Vec::new();
    for tar in layers {
        let blob = compress(tar, c);
        let d = Digest::of_bytes(&blob);
        let diff = Digest::of_bytes(tar);
        descs.push(
            json!({"mediaType": c.oci_media_type(), "digest": d.to_string(), "size": blob.len()}),
        );
        diff_ids.push(diff.to_string());
        out_layers.push((d, diff));
        blobs.push(blob);
    }
    let config_bytes = serde_json::to_vec(&json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = Digest::of_bytes(&config_bytes);
    let manifest_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": descs,
    }))
    .unwrap();
    TestImage {
        manifest: Digest::of_bytes(&manifest_bytes),
        config: config_digest,
        layers: out_layers,
        manifest_bytes,
        config_bytes,
        blobs,
    }
}

/// Builds and stores an image's blobs in `cs`.
pub(crate) fn put_image(
    cs: &ContentStore,
    layers: &[Vec<u8>],
    c: Compression,
    config: serde_json::Value,
) -> TestImage {
    let img = build_image(layers, c, config);
    for b in &img.blobs {
        cs.write_blob(b).unwrap();
    }
    cs.write_blob(&img.config_bytes).unwrap();
    cs.write_blob(&img.manifest_bytes).unwrap();
    img
}

//! The whole image pipeline over a local OCI layout (built here), with the Linux host:
//! digest and DiffID checks, gzip/zstd/plain layers, the `urls` fallback over a loopback
//! HTTP server, chain order, and reuse of finished layers.

mod common;

use std::path::Path;

use common::*;
use zlayer_wclayer::{
    unpack_image_cli, unpack_windows_image, Error, OciLayoutSource, RegistryAuth,
};

fn base_tar() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/base.txt", b"base", &[]);
    t.finish()
}

fn diff_tar(body: &[u8]) -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file("Files/app.txt", body, &[])
        .hardlink("Files/base-link", "Files/base.txt");
    t.finish()
}

fn unpack(root: &Path, dest: &Path) -> Result<zlayer_wclayer::UnpackedImage, Error> {
    let src = OciLayoutSource::open(root)?;
    let (img, layers) = src.resolve(Some("v1"))?;
    unpack_windows_image(&src, &img, &RegistryAuth::Anonymous, &layers, dest)
}

#[test]
fn three_layers_gzip_zstd_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t3 = LayerTar::new();
    t3.dir("Files/", &[]).file("Files/.wh.app.txt", b"", &[]);
    let root = layout(
        tmp.path(),
        &[
            layer(
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                base_tar(),
            ),
            layer(
                "application/vnd.oci.image.layer.v1.tar+zstd",
                diff_tar(b"app"),
            ),
            layer("application/vnd.oci.image.layer.v1.tar", t3.finish()),
        ],
    );
    let dest = tmp.path().join("layers");
    let out = unpack(&root, &dest).unwrap();
    assert_eq!(out.root, dest);
    assert_eq!(out.chain.len(), 3);
    let (top, mid, base) = (&out.chain[0], &out.chain[1], &out.chain[2]);
    assert_eq!(std::fs::read(base.join("Files/base.txt")).unwrap(), b"base");
    // The middle layer is staged: header + DATA record.
    assert_eq!(
        std::fs::read(mid.join("Files/app.txt")).unwrap(),
        [&[0u8; 4][..], &stream_header(1, 3, ""), b"app"].concat()
    );
    // Its link resolved to the base layer.
    assert_eq!(
        manifest(mid)["links"][0]["target_root"],
        base.to_str().unwrap()
    );
    // The top layer imported with the parent chain, immediate parent first.
    let m = manifest(top);
    assert_eq!(m["calls"][0]["parents"], serde_json::json!([mid, base]));
    assert_eq!(m["tombstones"][0]["path"], "Files/app.txt");

    // A second run reuses the finished layers (the manifests are untouched).
    let before = std::fs::metadata(top.join("manifest.json"))
        .unwrap()
        .modified()
        .unwrap();
    let again = unpack(&root, &dest).unwrap();
    assert_eq!(again.chain, out.chain);
    let after = std::fs::metadata(top.join("manifest.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // The CLI entry point does the same from an oci: reference.
    let dest2 = tmp.path().join("cli");
    unpack_image_cli(&format!("oci:{}:v1", root.display()), &dest2).unwrap();
    assert!(dest2
        .join(out.chain[0].file_name().unwrap())
        .join("manifest.json")
        .exists());
}

#[test]
fn corrupt_blob_is_reported_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = layer("application/vnd.oci.image.layer.v1.tar+gzip", base_tar());
    let root = layout(tmp.path(), std::slice::from_ref(&l));
    // Flip a byte in the stored blob: it no longer matches its digest.
    let path = root.join("blobs/sha256").join(&sha256(&l.blob)[7..]);
    let mid = l.blob.len() / 2;
    l.blob[mid] ^= 0xff;
    std::fs::write(&path, &l.blob).unwrap();
    let dest = tmp.path().join("layers");
    let err = unpack(&root, &dest).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains(&sha256(&gzip(&base_tar()))),
        "{err}"
    );
    // Nothing half-made is left behind.
    let left: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(".complete")]);
}

#[test]
fn wrong_diff_id_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = layer("application/vnd.oci.image.layer.v1.tar+gzip", base_tar());
    let real = l.diff_id.clone();
    l.diff_id = sha256(b"something else");
    let root = layout(tmp.path(), &[l]);
    let err = unpack(&root, &tmp.path().join("layers")).unwrap_err();
    match &err {
        Error::DiffIdMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &sha256(b"something else"));
            assert_eq!(actual, &real);
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn foreign_layer_falls_back_to_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = layer(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        base_tar(),
    );
    let server = serve(l.blob.clone(), 2);
    // The first mirror 404s, the second serves the blob.
    l.urls = vec![format!("{server}/missing"), format!("{server}/blob")];
    l.omit = true;
    let root = layout(tmp.path(), &[l]);
    let out = unpack(&root, &tmp.path().join("layers")).unwrap();
    assert_eq!(
        std::fs::read(out.chain[0].join("Files/base.txt")).unwrap(),
        b"base"
    );
}

#[test]
fn mirror_with_wrong_size_and_no_mirror_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = layer("application/vnd.oci.image.layer.v1.tar+gzip", base_tar());
    let server = serve(b"short".to_vec(), 1);
    l.urls = vec![format!("{server}/blob")];
    l.omit = true;
    let root = layout(tmp.path(), &[l]);
    let err = unpack(&root, &tmp.path().join("layers"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("serves 5 bytes"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let mut l = layer("application/vnd.oci.image.layer.v1.tar+gzip", base_tar());
    l.omit = true;
    let root = layout(tmp.path(), &[l]);
    let err = unpack(&root, &tmp.path().join("layers"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no urls"), "{err}");
}

#[test]
fn unknown_media_type_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let l = layer("application/x-rar", base_tar());
    let root = layout(tmp.path(), &[l]);
    let err = unpack(&root, &tmp.path().join("layers"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("application/x-rar"), "{err}");
}

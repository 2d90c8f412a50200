//! The pipeline against a real registry (Debian's `docker-registry` on a loopback port, images
//! pushed with skopeo) through the image crate's client: a pushed base + diff image, and a
//! foreign base layer the registry does not hold, fetched from its `urls`.

mod common;

use common::*;
use zlayer_image::registry::RegistryConfig;
use zlayer_testkit::prereq::require_bin;
use zlayer_testkit::push::push_tag;
use zlayer_testkit::LocalRegistry;
use zlayer_wclayer::registry_source::RegistrySource;
use zlayer_wclayer::{unpack_image_cli, unpack_windows_image, RegistryAuth};

fn base_tar() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/base.txt", b"base", &[]);
    t.finish()
}

fn diff_tar() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file("Files/app.txt", b"app", &[])
        .hardlink("Files/base-link", "Files/base.txt");
    t.finish()
}

fn registry_config() -> RegistryConfig {
    RegistryConfig {
        ignore_docker_config: true,
        retries: 1,
        ..Default::default()
    }
}

#[test]
fn pulls_and_converts_from_a_registry() {
    if require_bin("skopeo").is_none()
        || !zlayer_testkit::prereq::require(
            "docker-registry binary",
            std::path::Path::new(zlayer_testkit::registry::DEFAULT_REGISTRY_BIN).exists(),
        )
    {
        return;
    }
    let registry = LocalRegistry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = layout(
        tmp.path(),
        &[
            layer("application/vnd.oci.image.layer.v1.tar+gzip", base_tar()),
            layer("application/vnd.oci.image.layer.v1.tar+zstd", diff_tar()),
        ],
    );
    push_tag(&root, "v1", &registry.host(), "win/app:v1", None, None).unwrap();
    let image = format!("{}/win/app:v1", registry.host());

    let source = RegistrySource::new(registry_config(), &image, &RegistryAuth::Anonymous).unwrap();
    let (img, layers) = source.resolve(&image).unwrap();
    assert_eq!(layers.len(), 2);
    let dest = tmp.path().join("layers");
    let out =
        unpack_windows_image(&source, &img, &RegistryAuth::Anonymous, &layers, &dest).unwrap();
    let (top, base) = (&out.chain[0], &out.chain[1]);
    assert_eq!(std::fs::read(base.join("Files/base.txt")).unwrap(), b"base");
    assert_eq!(
        std::fs::read(top.join("Files/app.txt")).unwrap(),
        [&[0u8; 4][..], &stream_header(1, 3, ""), b"app"].concat()
    );
    assert_eq!(
        manifest(top)["links"][0]["target_root"],
        base.to_str().unwrap()
    );

    // The CLI entry point takes the registry reference too.
    let dest2 = tmp.path().join("cli");
    unpack_image_cli(&image, &dest2).unwrap();
    assert!(dest2
        .join(top.file_name().unwrap())
        .join("manifest.json")
        .exists());
}

#[test]
fn foreign_layer_missing_from_the_registry_comes_from_its_urls() {
    if require_bin("skopeo").is_none()
        || !zlayer_testkit::prereq::require(
            "docker-registry binary",
            std::path::Path::new(zlayer_testkit::registry::DEFAULT_REGISTRY_BIN).exists(),
        )
    {
        return;
    }
    let registry = LocalRegistry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut base = layer(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        base_tar(),
    );
    let foreign_digest = sha256(&base.blob);
    let mirror = serve(base.blob.clone(), 4);
    base.urls = vec![format!("{mirror}/base.tar.gz")];
    let root = layout(
        tmp.path(),
        &[
            base,
            layer("application/vnd.oci.image.layer.v1.tar+gzip", diff_tar()),
        ],
    );
    push_tag(&root, "v1", &registry.host(), "win/foreign:v1", None, None).unwrap();
    let image = format!("{}/win/foreign:v1", registry.host());
    // skopeo keeps foreign layers as references: the registry really does not have the blob.
    let url = format!(
        "http://{}/v2/win/foreign/blobs/{foreign_digest}",
        registry.host()
    );
    match ureq::get(&url).call() {
        Err(ureq::Error::Status(404, _)) => {}
        other => panic!("expected 404 for the foreign blob, got {other:?}"),
    }
    let source = RegistrySource::new(registry_config(), &image, &RegistryAuth::Anonymous).unwrap();
    let (img, layers) = source.resolve(&image).unwrap();
    assert_eq!(layers[0].urls.len(), 1, "the foreign layer keeps its urls");
    let out = unpack_windows_image(
        &source,
        &img,
        &RegistryAuth::Anonymous,
        &layers,
        &tmp.path().join("layers"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(out.chain[1].join("Files/base.txt")).unwrap(),
        b"base"
    );
}

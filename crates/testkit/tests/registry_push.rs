//! docker-registry launcher + skopeo push of fixtures + pull back.

mod common;

use std::process::Command;

use common::run;
use zlayer_testkit::{fixtures, push, require_bin, LocalRegistry};

#[test]
fn registry_starts_answers_and_stops() {
    let _ = require_bin!("docker-registry");
    let mut reg = LocalRegistry::start().unwrap();
    let pid = reg.pid().unwrap();
    assert!(reg.host().starts_with("127.0.0.1:"));
    let resp = ureq::get(&format!("{}/v2/", reg.url())).call().unwrap();
    assert_eq!(resp.status(), 200);
    reg.stop().unwrap();
    assert!(reg.pid().is_none());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "registry pid {pid} still exists after stop"
    );
    assert!(ureq::get(&format!("{}/v2/", reg.url())).call().is_err());
}

#[test]
fn two_registries_get_different_ports() {
    let _ = require_bin!("docker-registry");
    let a = LocalRegistry::start().unwrap();
    let b = LocalRegistry::start().unwrap();
    assert_ne!(a.addr(), b.addr());
}

#[test]
fn push_busybox_and_pull_back_with_skopeo() {
    let _ = require_bin!("docker-registry");
    let skopeo = require_bin!("skopeo");
    let reg = LocalRegistry::start().unwrap();
    let layout = fixtures::cached("busybox").unwrap();

    let d = push::push_layout(&layout, &reg.host(), "fixtures/busybox:latest").unwrap();
    assert_eq!(d, layout.manifest_digest);
    let i = push::push_multiarch(&layout, &reg.host(), "fixtures/busybox:multi").unwrap();
    assert_eq!(Some(i), layout.index_digest);
    // The arm64 image of the index is reachable by digest.
    let arm = &layout.platforms[1];
    assert_eq!(arm.platform, "linux/arm64");
    assert_eq!(
        push::manifest_digest(&reg.host(), "fixtures/busybox", &arm.manifest_digest).unwrap(),
        arm.manifest_digest
    );

    // Pull back and compare the blobs.
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("pulled");
    run(Command::new(&skopeo).args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/fixtures/busybox:latest", reg.host()),
        &format!("oci:{}:latest", out.display()),
    ]));
    for digest in [
        &layout.manifest_digest,
        &layout.config_digest,
        &layout.layers[0].digest,
    ] {
        let hex = digest.trim_start_matches("sha256:");
        let pulled = std::fs::read(out.join("blobs/sha256").join(hex)).unwrap();
        let orig = std::fs::read(layout.blob_path(digest)).unwrap();
        assert!(pulled == orig, "blob {digest} differs after round trip");
    }
}

#[test]
fn push_to_dead_registry_fails_clearly() {
    let _ = require_bin!("skopeo");
    let layout = fixtures::cached("busybox").unwrap();
    let port = zlayer_testkit::registry::free_loopback_port().unwrap();
    let err = push::push_layout(&layout, &format!("127.0.0.1:{port}"), "x/y:z").unwrap_err();
    assert!(err.to_string().contains("skopeo copy"), "{err:#}");
}

#[test]
fn http_push_of_docker_media_types_and_manifest_list() {
    let _ = require_bin!("docker-registry");
    let skopeo = require_bin!("skopeo");
    let reg = LocalRegistry::start().unwrap();
    let layout = fixtures::cached("busybox-docker").unwrap();
    let oci = fixtures::cached("busybox").unwrap();
    // Same layer bytes and config, different manifest media types.
    assert_eq!(layout.layers[0].digest, oci.layers[0].digest);
    assert_eq!(
        layout.layers[0].media_type,
        fixtures::media_types::DOCKER_LAYER_GZIP
    );
    assert_ne!(layout.manifest_digest, oci.manifest_digest);

    let d = push::push_layout_http(&layout, &reg.host(), "docker/busybox:1").unwrap();
    assert_eq!(d, layout.manifest_digest);
    let list = push::push_tag_http(
        &layout.dir,
        fixtures::MULTIARCH_TAG,
        &reg.host(),
        "docker/busybox:multi",
        None,
    )
    .unwrap();
    assert_eq!(Some(list), layout.index_digest);

    // skopeo sees Docker schema 2 / a manifest list, and can pull it.
    let raw = run(Command::new(&skopeo).args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/docker/busybox:multi", reg.host()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["mediaType"], fixtures::media_types::DOCKER_MANIFEST_LIST);
    let t = tempfile::tempdir().unwrap();
    run(Command::new(&skopeo).args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/docker/busybox:1", reg.host()),
        &format!("dir:{}", t.path().join("d").display()),
    ]));
    let m = std::fs::read(t.path().join("d/manifest.json")).unwrap();
    assert_eq!(fixtures::sha256_digest(&m), layout.manifest_digest);

    // The HTTP push of an OCI layout gives the same digest as skopeo's.
    let o = push::push_layout_http(&oci, &reg.host(), "oci/busybox:1").unwrap();
    assert_eq!(o, oci.manifest_digest);
    // Pushing again is idempotent (blobs already there).
    push::push_layout_http(&oci, &reg.host(), "oci/busybox:1").unwrap();
}

#[test]
fn rules_and_small_big_push_with_all_layer_types() {
    let _ = require_bin!("docker-registry");
    let _ = require_bin!("skopeo");
    let reg = LocalRegistry::start().unwrap();
    // gzip + uncompressed + zstd layers, pushed by skopeo with digests preserved.
    let rules = fixtures::cached("rules").unwrap();
    assert_eq!(
        push::push_layout(&rules, &reg.host(), "fixtures/rules:1").unwrap(),
        rules.manifest_digest
    );
    let big = fixtures::cached("big-10").unwrap();
    assert_eq!(
        push::push_layout_http(&big, &reg.host(), "fixtures/big:10").unwrap(),
        big.manifest_digest
    );
    // Blobs come back byte for byte (zstd layer included).
    for l in &rules.layers {
        let url = format!("{}/v2/fixtures/rules/blobs/{}", reg.url(), l.digest);
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut ureq::get(&url).call().unwrap().into_reader(),
            &mut body,
        )
        .unwrap();
        assert_eq!(fixtures::sha256_digest(&body), l.digest, "{}", l.media_type);
    }
}

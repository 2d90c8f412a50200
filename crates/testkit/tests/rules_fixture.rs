//! The rules fixture: reproducible, media types as promised, and its expected tree
//! matches an independent unpacker (umoci).

mod common;

use std::process::Command;

use common::{run, tree_bytes};
use zlayer_testkit::fixtures::{self, media_types, rules, Compression};
use zlayer_testkit::{require_bin, require_root};

#[test]
fn rules_is_reproducible_with_all_three_compressions() {
    let t = tempfile::tempdir().unwrap();
    let a = rules::build(&t.path().join("a")).unwrap();
    let b = rules::build(&t.path().join("b")).unwrap();
    assert_eq!(
        a,
        Layout {
            dir: a.dir.clone(),
            ..b.clone()
        }
    );
    assert_eq!(tree_bytes(&a.dir), tree_bytes(&b.dir));
    let types: Vec<&str> = a.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        types,
        [
            media_types::LAYER_TAR_GZIP,
            media_types::LAYER_TAR,
            media_types::LAYER_TAR_ZSTD
        ]
    );
    // An uncompressed layer's digest is its DiffID.
    assert_eq!(a.layers[1].digest, a.layers[1].diff_id);
    assert_ne!(a.layers[2].digest, a.layers[2].diff_id);
}

use zlayer_testkit::Layout;

fn umoci_unpack(layout: &Layout, bundle: &std::path::Path) {
    let umoci = zlayer_testkit::prereq::find_bin("umoci").unwrap();
    run(Command::new(umoci).args([
        "unpack",
        "--image",
        &format!("{}:latest", layout.dir.display()),
        bundle.to_str().unwrap(),
    ]));
}

#[test]
fn rules_expected_tree_matches_umoci_unpack() {
    require_root!();
    let _ = require_bin!("umoci");
    let t = tempfile::tempdir().unwrap();
    // umoci 0.4.7 (Debian 12) cannot read zstd layers: check the gzip variant, whose third
    // layer is the same tar (same DiffID) as the zstd one.
    let layout = rules::build_with(&t.path().join("layout"), Compression::Gzip).unwrap();
    let zstd = fixtures::cached("rules").unwrap();
    assert_eq!(layout.layers[2].diff_id, zstd.layers[2].diff_id);
    assert_eq!(layout.layers[2].media_type, media_types::LAYER_TAR_GZIP);
    let bundle = t.path().join("bundle");
    umoci_unpack(&layout, &bundle);
    let rootfs = bundle.join("rootfs");
    rules::verify_tree(&rootfs, &rules::VerifyOptions::default()).unwrap();

    // The verifier really notices differences.
    std::fs::remove_file(rootfs.join("a/keep.txt")).unwrap();
    std::fs::write(rootfs.join("gone"), b"x").unwrap();
    nix::unistd::chown(&rootfs.join("owners/app.txt"), Some(0.into()), None).unwrap();
    let err = rules::verify_tree(&rootfs, &rules::VerifyOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("a/keep.txt: missing"), "{err}");
    assert!(err.contains("gone: must not exist"), "{err}");
    assert!(err.contains("owners/app.txt: owner 0:1000"), "{err}");
}

#[test]
fn rules_passes_skopeo_inspect() {
    let skopeo = require_bin!("skopeo");
    let layout = fixtures::cached("rules").unwrap();
    let raw = run(Command::new(skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}:latest", layout.dir.display()),
    ]));
    assert_eq!(
        fixtures::sha256_digest(raw.as_bytes()),
        layout.manifest_digest
    );
}

//! Reproducibility and validity of the busybox and big fixtures.

mod common;

use std::process::Command;

use common::{run, tree_bytes};
use zlayer_testkit::fixtures::{self, big, media_types};
use zlayer_testkit::require_bin;

#[test]
fn busybox_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let a = fixtures::build("busybox", &t.path().join("a")).unwrap();
    let b = fixtures::build("busybox", &t.path().join("b")).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a.index_digest, b.index_digest);
    assert_eq!(a.layers, b.layers);
    assert_eq!(
        tree_bytes(&a.dir),
        tree_bytes(&b.dir),
        "layout bytes differ"
    );
    // Blob names are their digests.
    for (name, bytes) in tree_bytes(&a.dir) {
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            assert_eq!(fixtures::sha256_digest(&bytes), format!("sha256:{hex}"));
        }
    }
    assert_eq!(a.layers.len(), 1);
    assert_eq!(a.layers[0].media_type, media_types::LAYER_TAR_GZIP);
    assert_eq!(a.platforms.len(), 2);
    assert_eq!(a.platforms[0].manifest_digest, a.manifest_digest);
}

#[test]
fn busybox_passes_skopeo_and_umoci() {
    let skopeo = require_bin!("skopeo");
    let umoci = require_bin!("umoci");
    let layout = fixtures::cached("busybox").unwrap();
    let dir = layout.dir.display().to_string();
    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", &format!("oci:{dir}:latest")]));
    assert_eq!(
        fixtures::sha256_digest(raw.as_bytes()),
        layout.manifest_digest
    );
    let info: serde_json::Value = serde_json::from_str(&run(
        Command::new(&skopeo).args(["inspect", &format!("oci:{dir}:latest")])
    ))
    .unwrap();
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Layers"][0], layout.layers[0].digest.as_str());
    let index =
        run(Command::new(&skopeo).args(["inspect", "--raw", &format!("oci:{dir}:multiarch")]));
    assert_eq!(
        Some(fixtures::sha256_digest(index.as_bytes())),
        layout.index_digest
    );
    let stat = run(Command::new(&umoci).args(["stat", "--image", &format!("{dir}:latest")]));
    assert!(
        stat.contains(&layout.layers[0].digest),
        "umoci stat: {stat}"
    );
}

#[test]
fn busybox_unpacks_with_umoci_and_has_users_and_applets() {
    zlayer_testkit::require_root!();
    let umoci = require_bin!("umoci");
    let layout = fixtures::cached("busybox").unwrap();
    let t = tempfile::tempdir().unwrap();
    let bundle = t.path().join("bundle");
    run(Command::new(&umoci).args([
        "unpack",
        "--image",
        &format!("{}:latest", layout.dir.display()),
        bundle.to_str().unwrap(),
    ]));
    let rootfs = bundle.join("rootfs");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("app:x:1000:1000:"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("var/www/index.html")).unwrap(),
        "hello from zlayer\n"
    );
    for applet in ["sh", "httpd", "wget", "nc", "sleep"] {
        let link = std::fs::read_link(rootfs.join("bin").join(applet)).unwrap();
        assert_eq!(link.to_str(), Some("busybox"));
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = std::fs::metadata(rootfs.join("tmp")).unwrap();
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    let home = std::fs::metadata(rootfs.join("home/app")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    // The binary really runs.
    let out = run(Command::new(rootfs.join("bin/busybox")).args(["echo", "ok"]));
    assert_eq!(out, "ok\n");
}

#[test]
fn small_big_is_reproducible_and_mixed() {
    let t = tempfile::tempdir().unwrap();
    let opts = big::BigOptions {
        total_bytes: 10 << 20,
        layers: 5,
        max_file_bytes: 1 << 20,
    };
    let a = big::build(&t.path().join("a"), &opts).unwrap();
    let b = big::build(&t.path().join("b"), &opts).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.layers.len(), 5);
    let uncompressed: u64 = a.layers.iter().map(|l| l.uncompressed_size).sum();
    let compressed = a.total_layer_size();
    assert!(uncompressed >= 10 << 20);
    // Half random, half text: gzip shrinks it, but by well under 3x... and over 1.2x.
    let ratio = uncompressed as f64 / compressed as f64;
    assert!((1.2..3.0).contains(&ratio), "compression ratio {ratio}");
    // Distinct layers.
    let mut digests: Vec<_> = a.layers.iter().map(|l| &l.digest).collect();
    digests.dedup();
    assert_eq!(digests.len(), 5);
}

#[test]
fn cached_returns_the_same_layout() {
    let a = fixtures::cached("busybox").unwrap();
    let b = fixtures::cached("busybox").unwrap();
    assert_eq!(a, b);
    assert!(a.dir.join("index.json").exists());
    let err = fixtures::build("nope", &a.dir.join("x")).unwrap_err();
    assert!(err.to_string().contains("unknown fixture"), "{err}");
}

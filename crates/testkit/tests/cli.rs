//! The `zlayer-fixtures` binary.

mod common;

use std::process::Command;

use common::run;
use zlayer_testkit::fixtures::{self, Layout};

const BIN: &str = env!("CARGO_BIN_EXE_zlayer-fixtures");

#[test]
fn build_prints_the_same_layout_as_the_library() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("bb");
    let json = run(Command::new(BIN)
        .args(["build", "busybox", "--json", "--out"])
        .arg(&out));
    let from_cli: Layout = serde_json::from_str(&json).unwrap();
    let cached = fixtures::cached("busybox").unwrap();
    assert_eq!(from_cli.manifest_digest, cached.manifest_digest);
    assert_eq!(from_cli.dir, out);
}

#[test]
fn unknown_fixture_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["build", "nosuch", "--out"])
        .arg(t.path().join("x"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown fixture \"nosuch\""), "{err}");
}

#[test]
fn verify_rules_rejects_a_wrong_tree() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("a")).unwrap();
    let o = Command::new(BIN)
        .arg("verify-rules")
        .arg(t.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("a/keep.txt: missing"), "{err}");
}

#[test]
fn default_big_is_200_mib_in_5_layers() {
    let big = fixtures::cached("big").unwrap();
    assert_eq!(big.layers.len(), 5);
    let files: u64 = big.layers.iter().map(|l| l.uncompressed_size).sum();
    assert!(
        (200 << 20..201 << 20).contains(&files),
        "uncompressed {files}"
    );
    // Incompressible half keeps the blobs above 40% of the data.
    assert!(
        big.total_layer_size() > 80 << 20,
        "compressed {}",
        big.total_layer_size()
    );
}

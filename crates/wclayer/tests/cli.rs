//! `convert_layer_cli`: layer files by magic bytes, base and diff layers.

mod common;

use common::*;
use zlayer_wclayer::convert_layer_cli;

fn diff_tar() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/hello.txt", b"hi", &[]);
    t.finish()
}

#[test]
fn converts_plain_gzip_and_zstd_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let base_tar_path = tmp.path().join("base.tar");
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/base.txt", b"b", &[]);
    std::fs::write(&base_tar_path, t.finish()).unwrap();
    let base = tmp.path().join("base");
    convert_layer_cli(&base_tar_path, &base, &[]).unwrap();
    assert_eq!(std::fs::read(base.join("Files/base.txt")).unwrap(), b"b");
    assert_eq!(manifest(&base)["kind"], "base");

    let tar = diff_tar();
    let variants = [
        ("l.tar", tar.clone()),
        ("l.tar.gz", gzip(&tar)),
        ("l.tar.zst", zstd::encode_all(&tar[..], 3).unwrap()),
    ];
    for (name, bytes) in variants {
        let src = tmp.path().join(name);
        std::fs::write(&src, bytes).unwrap();
        let out = tmp.path().join(format!("out-{name}"));
        convert_layer_cli(&src, &out, std::slice::from_ref(&base)).unwrap();
        // Staged files at their staged paths: 4-byte attributes + DATA record.
        assert_eq!(
            std::fs::read(out.join("Files/hello.txt")).unwrap(),
            [&[0u8; 4][..], &stream_header(1, 2, ""), b"hi"].concat(),
            "{name}"
        );
        assert_eq!(
            std::fs::read(out.join("Files.$wcidirs$")).unwrap(),
            [0x10, 0, 0, 0]
        );
        assert_eq!(manifest(&out)["kind"], "diff");
    }

    // A missing parent folder is named.
    let err = convert_layer_cli(
        &tmp.path().join("l.tar"),
        &tmp.path().join("x"),
        &[tmp.path().join("nope")],
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
    // So is a missing layer file.
    let err =
        convert_layer_cli(&tmp.path().join("none.tar"), &tmp.path().join("y"), &[]).unwrap_err();
    assert!(format!("{err:#}").contains("none.tar"), "{err:#}");
}

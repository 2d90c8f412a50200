//! Diff-layer conversion with the Linux host: every staged byte and every recorded call.
//! Expected bytes are worked out by hand from windows-layers.md; the comments show the sums.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use zlayer_wclayer::{convert_layer, Error, LinuxHost};

/// Makes a base layer with `Files/p.txt` ("parent") to serve as the parent of diff layers.
fn parent_layer(dir: &Path) -> PathBuf {
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/p.txt", b"parent", &[]);
    let p = dir.join("parent");
    convert_layer(&t.finish()[..], &LinuxHost::new(), &p, &[]).unwrap();
    p
}

fn convert_diff(tar: Vec<u8>) -> (tempfile::TempDir, PathBuf, PathBuf, Result<(), Error>) {
    let tmp = tempfile::tempdir().unwrap();
    let parent = parent_layer(tmp.path());
    let layer = tmp.path().join("layer");
    let r = convert_layer(
        &tar[..],
        &LinuxHost::new(),
        &layer,
        std::slice::from_ref(&parent),
    );
    (tmp, layer, parent, r)
}

#[test]
fn directory_file_sd_empty_file_and_times() {
    let sd = [1u8, 0, 4, 0x80, 0x14, 0, 0, 0]; // any bytes: the SD is carried opaquely
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .dir("Files/d/", &[("MSWINDOWS.fileattr", "16")])
        .file(
            "Files/d/f.txt",
            b"hello",
            &[
                ("MSWINDOWS.fileattr", "32"),
                ("MSWINDOWS.rawsd", &b64(&sd)),
                ("LIBARCHIVE.creationtime", "1500000000.5"),
                ("atime", "1600000001"),
                ("ctime", "1600000002"),
            ],
        )
        .file("Files/empty", b"", &[]);
    let (_tmp, layer, parent, r) = convert_diff(t.finish());
    r.unwrap();

    // Directory: real dir + "Files/d.$wcidirs$" = u32 attributes 0x10 and an empty stream.
    assert!(layer.join("Files/d").is_dir());
    assert_eq!(
        std::fs::read(layer.join("Files/d.$wcidirs$")).unwrap(),
        [0x10, 0, 0, 0]
    );
    // The root "Files/" entry has its record too.
    assert_eq!(
        std::fs::read(layer.join("Files.$wcidirs$")).unwrap(),
        [0x10, 0, 0, 0]
    );

    // File: attr 32 | SECURITY(3) size 8 + sd | DATA(1) size 5 + "hello" = 4 + 28 + 25 = 57.
    let want = [
        &32u32.to_le_bytes()[..],
        &stream_header(3, 8, ""),
        &sd,
        &stream_header(1, 5, ""),
        b"hello",
    ]
    .concat();
    let got = std::fs::read(layer.join("Files/d/f.txt")).unwrap();
    assert_eq!(got, want);
    assert_eq!(got.len(), 57);

    // Empty file: attributes 0 and a bare 20-byte DATA header of size 0 = 24 bytes.
    let want = [&[0u8, 0, 0, 0][..], &stream_header(1, 0, "")].concat();
    assert_eq!(std::fs::read(layer.join("Files/empty")).unwrap(), want);

    let m = manifest(&layer);
    assert_eq!(m["kind"], "diff");
    let f = &m["paths"]["Files/d/f.txt"];
    assert_eq!(f["kind"], "staged-file");
    assert_eq!(f["content"], "attr-header-backup-stream");
    // Staged files carry attributes 0 (the real ones are in the header) and the four times:
    // creation 1500000000.5 s -> 1.5e16 + 5e6 + 116444736000000000 = 131444736005000000;
    // access 1600000001 s -> MTIME_FT + 1e7; write = mtime; change 1600000002 -> MTIME_FT + 2e7.
    assert_eq!(f["attributes"], 0);
    assert_eq!(f["times"]["creation"], 131_444_736_005_000_000i64);
    assert_eq!(f["times"]["last_access"], MTIME_FT + 10_000_000);
    assert_eq!(f["times"]["last_write"], MTIME_FT);
    assert_eq!(f["times"]["change"], MTIME_FT + 20_000_000);
    // After the import the directory's times and attributes were re-applied.
    assert_eq!(m["paths"]["Files/d"]["attributes"], 16);
    assert_eq!(m["paths"]["Files/d"]["times"]["last_write"], MTIME_FT);
    assert_eq!(m["paths"]["Files/d.$wcidirs$"]["kind"], "dir-record");

    // Calls: ImportLayer with the parent chain (NameToGuid of "parent"), then staging deleted.
    let staging = layer.with_file_name(".layer.wcstaging");
    assert_eq!(m["calls"][0]["call"], "ImportLayer");
    assert_eq!(m["calls"][0]["layer"], layer.to_str().unwrap());
    assert_eq!(m["calls"][0]["import_folder"], staging.to_str().unwrap());
    assert_eq!(m["calls"][0]["parents"][0], parent.to_str().unwrap());
    assert_eq!(m["calls"][0]["name_to_guid"][0], "parent");
    assert_eq!(m["calls"][1]["call"], "DeleteTree");
    assert!(!staging.exists());
}

#[test]
fn symlinks_junction_ea_and_alternate_stream() {
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .symlink("Files/rel", "../a/b", &[("MSWINDOWS.fileattr", "1056")])
        .symlink(
            "Files/abs",
            "C:\\Windows",
            &[("MSWINDOWS.fileattr", "1040")],
        )
        .symlink(
            "Files/junc",
            "C:\\x",
            &[
                ("MSWINDOWS.fileattr", "1040"),
                ("MSWINDOWS.mountpoint", "1"),
            ],
        )
        .file(
            "Files/ea",
            b"",
            &[
                ("MSWINDOWS.xattr.b", &b64(b"2")),
                ("MSWINDOWS.xattr.a", &b64(b"1")),
            ],
        )
        .file("Files/ads", b"main", &[])
        .file("Files/ads:Zone.Identifier", b"[ZoneTransfer]", &[]);
    let (_tmp, layer, _parent, r) = convert_diff(t.finish());
    r.unwrap();

    // Relative symlink "../a/b" -> print name "..\a\b" (6 units, 12 bytes), substitute the same,
    // flags 1. Data length = 8 + (12+2)*2 + 4 = 40; reparse buffer = 8 + 40 = 48 bytes.
    let mut reparse = vec![
        0x0c, 0, 0, 0xa0, 40, 0, 0, 0, 0, 0, 12, 0, 14, 0, 12, 0, 1, 0, 0, 0,
    ];
    reparse.extend(utf16z("..\\a\\b"));
    reparse.extend(utf16z("..\\a\\b"));
    assert_eq!(reparse.len(), 48);
    // Attributes 1056 = 0x420 (ARCHIVE | REPARSE_POINT); a symlink has no DATA record.
    let want = [
        &1056u32.to_le_bytes()[..],
        &stream_header(8, 48, ""),
        &reparse,
    ]
    .concat();
    assert_eq!(std::fs::read(layer.join("Files/rel")).unwrap(), want);

    // Absolute "C:\Windows" (10 units) -> substitute "\??\C:\Windows" (14 units = 28 bytes).
    // Data length = 8 + 30 + 22 + 4 = 64; flags 0.
    let mut reparse = vec![
        0x0c, 0, 0, 0xa0, 64, 0, 0, 0, 0, 0, 28, 0, 30, 0, 20, 0, 0, 0, 0, 0,
    ];
    reparse.extend(utf16z("\\??\\C:\\Windows"));
    reparse.extend(utf16z("C:\\Windows"));
    let want = [
        &1040u32.to_le_bytes()[..],
        &stream_header(8, 72, ""),
        &reparse,
    ]
    .concat();
    // Attributes 1040 = DIRECTORY | REPARSE_POINT: a directory symlink, so it is staged as a
    // directory whose ".$wcidirs$" record holds the stream.
    assert_eq!(
        std::fs::read(layer.join("Files/abs.$wcidirs$")).unwrap(),
        want
    );

    // Junction "C:\x": tag 0xA0000003, no flags. Substitute "\??\C:\x" = 16 bytes, print 8.
    // Data length = 8 + 18 + 10 = 36. Attributes 1040 = DIRECTORY | REPARSE_POINT, so it is
    // staged as a directory with a ".$wcidirs$" record.
    let mut reparse = vec![3, 0, 0, 0xa0, 36, 0, 0, 0, 0, 0, 16, 0, 18, 0, 8, 0];
    reparse.extend(utf16z("\\??\\C:\\x"));
    reparse.extend(utf16z("C:\\x"));
    let want = [
        &1040u32.to_le_bytes()[..],
        &stream_header(8, 44, ""),
        &reparse,
    ]
    .concat();
    assert!(layer.join("Files/junc").is_dir());
    assert_eq!(
        std::fs::read(layer.join("Files/junc.$wcidirs$")).unwrap(),
        want
    );
    assert!(layer.join("Files/abs").is_dir());

    // EA buffer, sorted: "a"=1 then "b"=2. Each entry 8 + 1 + 1 + 1 = 11 -> padded to 12.
    // First next-offset 12, last 0. EA record size 24; then DATA size 0.
    let ea = [
        &[12u8, 0, 0, 0, 0, 1, 1, 0][..],
        b"a\0",
        b"1",
        &[0],
        &[0, 0, 0, 0, 0, 1, 1, 0],
        b"b\0",
        b"2",
        &[0],
    ]
    .concat();
    let want = [
        &[0u8; 4][..],
        &stream_header(2, 24, ""),
        &ea,
        &stream_header(1, 0, ""),
    ]
    .concat();
    assert_eq!(std::fs::read(layer.join("Files/ea")).unwrap(), want);

    // Alternate data stream: DATA "main", then ALTERNATE_DATA named ":Zone.Identifier:$DATA"
    // (22 units = 44 bytes of name) with the 14 bytes of the stream entry.
    let want = [
        &[0u8; 4][..],
        &stream_header(1, 4, ""),
        b"main",
        &stream_header(4, 14, ":Zone.Identifier:$DATA"),
        b"[ZoneTransfer]",
    ]
    .concat();
    assert_eq!(std::fs::read(layer.join("Files/ads")).unwrap(), want);
    assert!(!layer.join("Files/ads:Zone.Identifier").exists());
}

#[test]
fn hive_is_plain_content() {
    let mut t = LayerTar::new();
    t.dir("Hives/", &[]).file(
        "Hives/DefaultUser_Delta",
        b"regf....",
        &[("MSWINDOWS.fileattr", "32")],
    );
    let (_tmp, layer, _p, r) = convert_diff(t.finish());
    r.unwrap();
    // No attribute header, no framing: exactly the entry's bytes.
    assert_eq!(
        std::fs::read(layer.join("Hives/DefaultUser_Delta")).unwrap(),
        b"regf...."
    );
    // The Hives directory itself is staged like any directory.
    assert_eq!(
        std::fs::read(layer.join("Hives.$wcidirs$")).unwrap(),
        [0x10, 0, 0, 0]
    );
    let m = manifest(&layer);
    let h = &m["paths"]["Hives/DefaultUser_Delta"];
    assert_eq!(h["kind"], "restored-file");
    assert_eq!(h["attributes"], 0);
    assert_eq!(h["streams"][0]["id"], "DATA");
    assert_eq!(h["streams"][0]["size"], 8);
}

#[test]
fn whiteouts_and_opaque_marker() {
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .dir("Files/sub/", &[])
        .file("Files/sub/.wh.gone", b"", &[])
        .file("Files/sub/.wh..wh..opq", b"", &[])
        .file("Files/.wh.p.txt", b"", &[]);
    let (_tmp, layer, _p, r) = convert_diff(t.finish());
    r.unwrap();
    let m = manifest(&layer);
    // Tombstones in tar order, applied after the import; neither exists in this layer folder.
    assert_eq!(
        m["tombstones"],
        serde_json::json!([{"path": "Files/sub/gone", "found": false}, {"path": "Files/p.txt", "found": false}])
    );
    // The opaque marker left no trace; no file named like a whiteout was staged.
    assert!(!layer.join("Files/sub/.wh..wh..opq").exists());
    assert!(!layer.join("Files/sub/.wh.gone").exists());

    // A removal outside Files/ (and UtilityVM/Files/) is an error naming the entry.
    let mut t = LayerTar::new();
    t.dir("Hives/", &[]).file("Hives/.wh.x", b"", &[]);
    let (_tmp, layer, _p, r) = convert_diff(t.finish());
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("Hives/.wh.x") && err.contains("invalid tombstone"),
        "{err}"
    );
    assert!(!layer.exists(), "a failed layer is removed");
}

#[test]
fn hard_links_to_this_layer_and_parent() {
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file("Files/mine.txt", b"mine", &[])
        .hardlink("Files/to-mine", "Files/mine.txt")
        .hardlink("Files/to-parent", "Files/p.txt")
        // A link to a link added earlier in this layer counts as "added by this layer".
        .hardlink("Files/to-link", "Files/to-parent");
    let (_tmp, layer, parent, r) = convert_diff(t.finish());
    r.unwrap();
    let m = manifest(&layer);
    let links = &m["links"];
    assert_eq!(links[0]["name"], "Files/to-mine");
    assert_eq!(links[0]["target_root"], layer.to_str().unwrap());
    assert_eq!(links[1]["name"], "Files/to-parent");
    assert_eq!(links[1]["target"], "Files/p.txt");
    assert_eq!(links[1]["target_root"], parent.to_str().unwrap());
    assert_eq!(links[2]["target_root"], layer.to_str().unwrap());
    // Real hard links after the import: same inode as their targets.
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(layer.join("Files/to-mine")),
        ino(layer.join("Files/mine.txt"))
    );
    assert_eq!(
        ino(layer.join("Files/to-parent")),
        ino(parent.join("Files/p.txt"))
    );
    assert_eq!(
        ino(layer.join("Files/to-link")),
        ino(parent.join("Files/p.txt"))
    );
}

#[test]
fn missing_link_target_is_an_error() {
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).hardlink("Files/l", "Files/nowhere");
    let (_tmp, layer, _p, r) = convert_diff(t.finish());
    match r.unwrap_err() {
        Error::MissingLinkTarget {
            name,
            target,
            parents,
        } => {
            assert_eq!(
                (name.as_str(), target.as_str(), parents),
                ("Files/l", "Files/nowhere", 1)
            );
        }
        e => panic!("unexpected {e}"),
    }
    assert!(!layer.exists());
    assert!(!layer.with_file_name(".layer.wcstaging").exists());
}

#[test]
fn names_differing_only_in_case_and_exact_link_lookup() {
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file("Files/a.txt", b"lower", &[])
        .file("Files/A.txt", b"upper", &[])
        .hardlink("Files/l", "Files/A.txt");
    let (_tmp, layer, _p, r) = convert_diff(t.finish());
    r.unwrap();
    let body = |n: &str| std::fs::read(layer.join(n)).unwrap()[24..].to_vec();
    assert_eq!(body("Files/a.txt"), b"lower");
    assert_eq!(body("Files/A.txt"), b"upper");
    assert_eq!(body("Files/l"), b"upper");

    // Lookup is exact and case-sensitive: "Files/A.TXT" was never added.
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file("Files/A.txt", b"upper", &[])
        .hardlink("Files/l", "Files/A.TXT");
    let (_tmp, _layer, _p, r) = convert_diff(t.finish());
    assert!(matches!(r, Err(Error::MissingLinkTarget { .. })));
}

#[test]
fn long_path() {
    // 20 nested directories of 20 characters: a name of well over 260 characters, carried by a
    // GNU long-name record; staged like any other name.
    let mut t = LayerTar::new();
    t.dir("Files/", &[]);
    let mut name = String::from("Files");
    for i in 0..20 {
        name.push_str(&format!("/{:0>20}", i));
        t.dir(&format!("{name}/"), &[]);
    }
    let file = format!("{name}/leaf.txt");
    assert!(file.len() > 400);
    t.file(&file, b"deep", &[]);
    let (_tmp, layer, _p, r) = convert_diff(t.finish());
    r.unwrap();
    let got = std::fs::read(layer.join(&file)).unwrap();
    assert_eq!(
        got,
        [&[0u8; 4][..], &stream_header(1, 4, ""), b"deep"].concat()
    );
    assert_eq!(
        std::fs::read(layer.join(format!("{name}.$wcidirs$"))).unwrap(),
        [0x10, 0, 0, 0]
    );
}

#[test]
fn bad_entries_are_named() {
    // An alternate stream with no file before it.
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/x:s", b"1", &[]);
    let (_tmp, _l, _p, r) = convert_diff(t.finish());
    let err = r.unwrap_err().to_string();
    assert!(err.contains("Files/x:s"), "{err}");

    // Something outside Files/, Hives/, UtilityVM/.
    let mut t = LayerTar::new();
    t.file("etc/passwd", b"x", &[]);
    let (_tmp, _l, _p, r) = convert_diff(t.finish());
    let err = r.unwrap_err().to_string();
    assert!(err.contains("etc/passwd"), "{err}");

    // Legacy SDDL descriptors need Win32: a clear error on Linux.
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file("Files/s", b"", &[("MSWINDOWS.sd", "O:BAG:BA")]);
    let (_tmp, _l, _p, r) = convert_diff(t.finish());
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("Files/s") && err.contains("needs Windows"),
        "{err}"
    );

    // A truncated tar.
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/big", &[7u8; 4096], &[]);
    let mut bytes = t.finish();
    bytes.truncate(1024 + 512 + 100);
    let (_tmp, _l, _p, r) = convert_diff(bytes);
    assert!(r.is_err());
}

#[test]
fn pax_path_and_linkpath_records_win_over_the_header() {
    // go-winio writes long names as PAX `path` / `linkpath` records (not GNU long names): the
    // ustar header holds a truncated stand-in, the PAX record the real name.
    let long_dir = format!("Files/{}", "p".repeat(120));
    let target = format!("C:\\{}", "t".repeat(120));
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_path("Files/").unwrap();
    dir.set_size(0);
    dir.set_mtime(MTIME);
    dir.set_cksum();
    b.append(&dir, &[][..]).unwrap();
    for (path, kind, link) in [
        (long_dir.clone(), tar::EntryType::Directory, None),
        (format!("{long_dir}/f"), tar::EntryType::Regular, None),
        (
            format!("{long_dir}/l"),
            tar::EntryType::Symlink,
            Some(target.clone()),
        ),
    ] {
        let mut recs = vec![("path", path.as_bytes())];
        if let Some(l) = &link {
            recs.push(("linkpath", l.as_bytes()));
        }
        b.append_pax_extensions(recs).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path("Files/stand-in").unwrap();
        if link.is_some() {
            h.set_link_name("stand-in").unwrap();
        }
        let data: &[u8] = if kind.is_file() { b"x" } else { b"" };
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let (_tmp, layer, _p, r) = convert_diff(b.into_inner().unwrap());
    r.unwrap();
    assert!(layer.join(&long_dir).is_dir());
    assert!(!layer.join("Files/stand-in").exists());
    assert_eq!(
        std::fs::read(layer.join(format!("{long_dir}/f"))).unwrap(),
        [&[0u8; 4][..], &stream_header(1, 1, ""), b"x"].concat()
    );
    // The symlink's reparse buffer carries the PAX linkpath: print name 123 units = 246 bytes,
    // substitute "\??\" + it = 254 bytes; data length 8 + 256 + 248 + 4 = 516.
    let staged = std::fs::read(layer.join(format!("{long_dir}/l"))).unwrap();
    let reparse = &staged[4 + 20..];
    assert_eq!(&reparse[4..6], &516u16.to_le_bytes());
    assert_eq!(&reparse[8..16], &[0, 0, 254, 0, 0, 1, 246, 0]);
    assert!(reparse.ends_with(&utf16z(&target)));
}

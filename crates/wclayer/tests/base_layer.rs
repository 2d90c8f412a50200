//! Base-layer conversion with the Linux host: real files, BackupWrite streams in the manifest,
//! BCD backups, utility VM processing, and the refusal of tombstones.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use zlayer_wclayer::{convert_layer, locate_uvm_boot_files, Error, LinuxHost};

#[test]
fn real_files_streams_and_links() {
    let sd = [1u8, 0, 4, 0x80, 0, 0, 0, 0];
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .file(
            "Files/f.txt",
            b"hello",
            &[("MSWINDOWS.rawsd", &b64(&sd)), ("MSWINDOWS.fileattr", "33")],
        )
        .file("Files/f.txt:s", b"side", &[])
        .symlink("Files/l", "f.txt", &[("MSWINDOWS.fileattr", "1056")])
        .hardlink("Files/hl", "Files/f.txt")
        .dir("Hives/", &[])
        .file("Hives/Sam_Base", b"regf", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("base");
    convert_layer(&t.finish()[..], &LinuxHost::new(), &layer, &[]).unwrap();

    // Real content at the real path; no attribute header, no .$wcidirs$.
    assert_eq!(std::fs::read(layer.join("Files/f.txt")).unwrap(), b"hello");
    assert_eq!(std::fs::read(layer.join("Files/f.txt:s")).unwrap(), b"side");
    assert_eq!(
        std::fs::read(layer.join("Hives/Sam_Base")).unwrap(),
        b"regf"
    );
    assert!(!layer.join("Files.$wcidirs$").exists());
    // The hard link is made at once.
    let ino = |n: &str| std::fs::metadata(layer.join(n)).unwrap().ino();
    assert_eq!(ino("Files/hl"), ino("Files/f.txt"));

    let m = manifest(&layer);
    assert_eq!(m["kind"], "base");
    let f = &m["paths"]["Files/f.txt"];
    assert_eq!(f["kind"], "restored-file");
    assert_eq!(f["attributes"], 33); // base layers keep the real attributes on the file
    assert_eq!(f["times"]["creation"], MTIME_FT);
    // Stream order: SECURITY, DATA, ALTERNATE_DATA.
    assert_eq!(f["streams"][0]["id"], "SECURITY");
    assert_eq!(f["streams"][0]["data_base64"], b64(&sd));
    assert_eq!(f["streams"][1]["id"], "DATA");
    assert_eq!(f["streams"][1]["size"], 5);
    assert_eq!(f["streams"][2]["id"], "ALTERNATE_DATA");
    assert_eq!(f["streams"][2]["name"], ":s:$DATA");
    assert_eq!(f["streams"][2]["file"], "Files/f.txt:s");
    // Symlink "f.txt": relative, 5 units. Data length = 8 + 12 + 12 + 4 = 36 -> 44 bytes.
    let l = &m["paths"]["Files/l"];
    assert_eq!(l["streams"][0]["id"], "REPARSE");
    assert_eq!(l["streams"][0]["size"], 44);
    assert_eq!(std::fs::read(layer.join("Files/l")).unwrap(), b"");
    // Directory times re-applied (children first), then ProcessBaseImage; no utility VM.
    assert_eq!(m["paths"]["Files"]["attributes"], 16);
    assert_eq!(
        m["calls"],
        serde_json::json!([{"call": "ProcessBaseImage", "layer": layer}])
    );
    assert_eq!(m["tombstones"], serde_json::json!([]));
}

#[test]
fn tombstones_and_opaque_markers_are_errors() {
    for (name, shown) in [
        ("Files/.wh.x", "Files/.wh.x"),
        ("Files/.wh..wh..opq", "Files/.wh..wh..opq"),
    ] {
        let mut t = LayerTar::new();
        t.dir("Files/", &[]).file(name, b"", &[]);
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("base");
        let err = convert_layer(&t.finish()[..], &LinuxHost::new(), &layer, &[]).unwrap_err();
        assert!(matches!(err, Error::BaseLayerTombstone { .. }));
        let text = err.to_string();
        assert!(
            text.contains("base layer cannot have tombstones") && text.contains(shown),
            "{text}"
        );
        assert!(!layer.exists());
    }
}

#[test]
fn utility_vm_bcd_backups_and_boot_files() {
    let boot = "UtilityVM/Files/EFI/Microsoft/Boot";
    let mut t = LayerTar::new();
    t.dir("Files/", &[])
        .dir("UtilityVM/", &[])
        .dir("UtilityVM/Files/", &[])
        .dir("UtilityVM/Files/EFI/", &[])
        .dir("UtilityVM/Files/EFI/Microsoft/", &[])
        .dir(&format!("{boot}/"), &[])
        .file(&format!("{boot}/bootmgfw.efi"), b"MZ", &[])
        .file(&format!("{boot}/BCD"), b"bcd", &[])
        .file(&format!("{boot}/BCD.LOG"), b"log", &[])
        .file(&format!("{boot}/BCD.LOG1"), b"log1", &[])
        .file(&format!("{boot}/BCD.LOG2"), b"log2", &[]);
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("base");
    convert_layer(&t.finish()[..], &LinuxHost::new(), &layer, &[]).unwrap();
    for (bak, body) in [
        ("bcd.bak", "bcd"),
        ("bcd.log.bak", "log"),
        ("bcd.log1.bak", "log1"),
        ("bcd.log2.bak", "log2"),
    ] {
        assert_eq!(
            std::fs::read_to_string(layer.join(bak)).unwrap(),
            body,
            "{bak}"
        );
    }
    assert_eq!(
        std::fs::read(layer.join(format!("{boot}/BCD"))).unwrap(),
        b"bcd"
    );
    let m = manifest(&layer);
    assert_eq!(
        m["calls"],
        serde_json::json!([
            {"call": "ProcessBaseImage", "layer": layer},
            {"call": "ProcessUtilityImage", "path": layer.join("UtilityVM")},
        ])
    );

    // A chain (topmost first) whose base has the boot manager; the child does not.
    let child = tmp.path().join("child");
    let mut t = LayerTar::new();
    t.dir("Files/", &[]).file("Files/x", b"x", &[]);
    convert_layer(
        &t.finish()[..],
        &LinuxHost::new(),
        &child,
        std::slice::from_ref(&layer),
    )
    .unwrap();
    let found = locate_uvm_boot_files(&[child.clone(), layer.clone()]).unwrap();
    assert_eq!(found.layer, layer);
    assert_eq!(
        found.boot_manager,
        layer.join(format!("{boot}/bootmgfw.efi"))
    );
    assert_eq!(
        found.system_template,
        layer.join("UtilityVM/SystemTemplate.vhdx")
    );

    let err = locate_uvm_boot_files(&[child]).unwrap_err().to_string();
    assert!(err.contains("not Hyper-V bootable"), "{err}");
}

#[test]
fn diff_layer_utility_vm_goes_straight_into_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let mut t = LayerTar::new();
    t.dir("Files/", &[]);
    convert_layer(&t.finish()[..], &LinuxHost::new(), &base, &[]).unwrap();

    let mut t = LayerTar::new();
    t.dir("UtilityVM/", &[])
        .dir("UtilityVM/Files/", &[])
        .file("UtilityVM/Files/kernel", b"k", &[])
        .hardlink("UtilityVM/Files/kernel2", "UtilityVM/Files/kernel");
    let layer = tmp.path().join("diff");
    convert_layer(&t.finish()[..], &LinuxHost::new(), &layer, &[base]).unwrap();
    // Not staged: restored in place (plain content), linked after import, then processed.
    assert_eq!(
        std::fs::read(layer.join("UtilityVM/Files/kernel")).unwrap(),
        b"k"
    );
    assert_eq!(
        std::fs::read(layer.join("UtilityVM/Files/kernel2")).unwrap(),
        b"k"
    );
    assert!(!layer.join("UtilityVM/Files.$wcidirs$").exists());
    let m = manifest(&layer);
    let calls: Vec<&str> = m["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["ImportLayer", "ProcessUtilityImage", "DeleteTree"]);
}

#[test]
fn diff_layer_utility_vm_removals_happen_in_place_and_must_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let mut t = LayerTar::new();
    t.dir("Files/", &[]);
    convert_layer(&t.finish()[..], &LinuxHost::new(), &base, &[]).unwrap();

    // Added then removed within the layer: removed at once from the layer folder.
    let mut t = LayerTar::new();
    t.dir("UtilityVM/", &[])
        .dir("UtilityVM/Files/", &[])
        .file("UtilityVM/Files/old", b"o", &[])
        .file("UtilityVM/Files/.wh.old", b"", &[]);
    let layer = tmp.path().join("diff");
    convert_layer(
        &t.finish()[..],
        &LinuxHost::new(),
        &layer,
        std::slice::from_ref(&base),
    )
    .unwrap();
    assert!(!layer.join("UtilityVM/Files/old").exists());
    let m = manifest(&layer);
    assert_eq!(
        m["calls"][0],
        serde_json::json!({"call": "RemoveAll", "path": "UtilityVM/Files/old"})
    );
    assert!(m["paths"].get("UtilityVM/Files/old").is_none());

    // Removing something the utility VM does not have is an error naming the whiteout.
    let mut t = LayerTar::new();
    t.dir("UtilityVM/", &[]).dir("UtilityVM/Files/", &[]).file(
        "UtilityVM/Files/.wh.nothing",
        b"",
        &[],
    );
    let err = convert_layer(
        &t.finish()[..],
        &LinuxHost::new(),
        &tmp.path().join("d2"),
        &[base],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("UtilityVM/Files/.wh.nothing"), "{err}");
}

use super::*;
use crate::reference::Reference;
use crate::testutil::*;
use serde_json::json;
use std::collections::HashSet;
use std::fs;
use std::time::Duration;

fn layers() -> Vec<Vec<u8>> {
    let base = RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/gone", b"deleted above")
        .dir("var/", 0o755)
        .dir("var/cache/", 0o755)
        .file("var/cache/old", b"hidden by opaque")
        .add(E {
            name: "tmp/",
            kind: tar::EntryType::Directory,
            mode: 0o1777,
            ..Default::default()
        })
        .add(E {
            name: "bin/tool",
            mode: 0o755,
            data: b"tool",
            ..Default::default()
        })
        .finish();
    let top = RawTar::new()
        .file("etc/.wh.gone", b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"new")
        .hardlink("bin/tool-link", "bin/tool")
        .file("tmp/x", b"x")
        .finish();
    vec![base, top]
}

fn config() -> serde_json::Value {
    json!({
        "Entrypoint": ["/bin/tool"],
        "Cmd": ["--help"],
        "Env": ["PATH=/bin", "A=b"],
        "WorkingDir": "/work",
        "User": "1000:1000",
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
        "Labels": {"org.example": "yes"},
        "StopSignal": "SIGINT"
    })
}

#[test]
fn record_list_resolve_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let img = put_image(store.content(), &layers(), Compression::Gzip, config());
    let name = Reference::parse("example.com/app:1").unwrap();
    let rec = store
        .record_image(&name, &img.manifest, &img.config)
        .unwrap();
    assert_eq!(rec.names, vec!["example.com/app:1".to_string()]);
    assert_eq!(rec.os, "linux");
    assert_eq!(rec.architecture, "amd64");

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, img.config);
    assert_eq!(list[0].created.as_deref(), Some("2024-01-02T03:04:05Z"));

    for q in [
        "example.com/app:1".to_string(),
        img.config.to_string(),
        img.manifest.to_string(),
        img.config.short().to_string(),
        img.config.hex()[..5].to_string(),
        format!("sha256:{}", &img.config.hex()[..8]),
        format!("example.com/app@{}", img.manifest),
    ] {
        assert_eq!(
            store.resolve(&q).unwrap().manifest_digest,
            img.manifest,
            "{q}"
        );
    }
    assert!(matches!(
        store.resolve("example.com/app:2"),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.resolve("busybox"),
        Err(StoreError::NotFound(_))
    ));

    let d = store.inspect("example.com/app:1").unwrap();
    assert_eq!(d.entrypoint, Some(vec!["/bin/tool".to_string()]));
    assert_eq!(d.cmd, Some(vec!["--help".to_string()]));
    assert_eq!(d.env, vec!["PATH=/bin", "A=b"]);
    assert_eq!(d.working_dir.as_deref(), Some("/work"));
    assert_eq!(d.user.as_deref(), Some("1000:1000"));
    assert_eq!(d.exposed_ports, vec!["53/udp", "8080/tcp"]);
    assert_eq!(d.labels.get("org.example").map(String::as_str), Some("yes"));
    assert_eq!(d.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(d.layers.len(), 2);
    assert_eq!(d.layers[0].diff_id, img.layers[0].1);
    assert_eq!(
        d.layers[1].chain_id,
        chain_ids(&[img.layers[0].1.clone(), img.layers[1].1.clone()])[1]
    );
    assert!(d.layers[0].snapshot.is_none());
    let cfg = store.config("example.com/app:1").unwrap();
    assert_eq!(cfg.rootfs().diff_ids().len(), 2);

    // a docker-style short name resolves through normalisation
    store
        .record_image(
            &Reference::parse("busybox").unwrap(),
            &img.manifest,
            &img.config,
        )
        .unwrap();
    assert_eq!(
        store
            .resolve("docker.io/library/busybox:latest")
            .unwrap()
            .manifest_digest,
        img.manifest
    );
    assert_eq!(store.resolve("busybox").unwrap().names.len(), 2);

    // `repo:tag@digest`: the digest decides even when the tag names another image
    let other = put_image(
        store.content(),
        &[RawTar::new().file("o", b"o").finish()],
        Compression::Gzip,
        json!({}),
    );
    store
        .record_image(
            &Reference::parse("pinned:1").unwrap(),
            &other.manifest,
            &other.config,
        )
        .unwrap();
    let q = format!("pinned:1@{}", img.manifest);
    assert_eq!(store.resolve(&q).unwrap().manifest_digest, img.manifest);
}

#[test]
fn unpack_layers_and_overlay_mount_merged_view() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let img = put_image(store.content(), &layers(), Compression::Zstd, config());
    store
        .record_image(
            &Reference::parse("app").unwrap(),
            &img.manifest,
            &img.config,
        )
        .unwrap();
    assert!(matches!(
        store.rootfs_layers("app"),
        Err(StoreError::NotUnpacked { .. })
    ));
    let snaps = store.unpack_layers("app").unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].parent.as_ref(), Some(&snaps[0].chain_id));
    let dirs = store.rootfs_layers("app").unwrap();
    assert_eq!(store.rootfs_snapshots("app").unwrap(), snaps);
    assert_eq!(
        dirs,
        snaps.iter().map(|s| s.path.clone()).collect::<Vec<_>>()
    );
    // unpacking again reuses the snapshots
    assert_eq!(store.unpack_layers("app").unwrap(), snaps);
    // the top layer stores whiteouts the overlay way
    let top = &snaps[1].path;
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(top.join("etc/gone"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(!top.join("etc/passwd").exists());
    assert_eq!(fs::read(top.join("bin/tool-link")).unwrap(), b"tool");

    // Real overlay mount of the chain: the merged view has the whiteouts applied.
    let mnt = tmp.path().join("merged");
    fs::create_dir(&mnt).unwrap();
    let lower: Vec<String> = dirs.iter().rev().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={}", lower.join(":"));
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap();
    let check = || -> Vec<String> {
        let mut problems = Vec::new();
        if fs::read(mnt.join("etc/passwd")).ok().as_deref()
            != Some(&b"root:x:0:0::/root:/bin/sh\n"[..])
        {
            problems.push("etc/passwd".to_string());
        }
        if mnt.join("etc/gone").exists() {
            problems.push("whiteout did not hide etc/gone".into());
        }
        let mut cache: Vec<_> = fs::read_dir(mnt.join("var/cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        cache.sort();
        if cache != vec!["new".to_string()] {
            problems.push(format!("opaque var/cache shows {cache:?}"));
        }
        if fs::read(mnt.join("bin/tool-link")).ok().as_deref() != Some(&b"tool"[..]) {
            problems.push("bin/tool-link".into());
        }
        use std::os::unix::fs::PermissionsExt;
        let tmode = fs::metadata(mnt.join("tmp")).unwrap().permissions().mode() & 0o7777;
        if tmode != 0o1777 {
            problems.push(format!("tmp mode {tmode:o}"));
        }
        problems
    };
    let problems = check();
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn diff_id_mismatch_is_an_error_and_leaves_no_snapshot() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let ls = layers();
    let img = put_image(store.content(), &ls, Compression::Gzip, config());
    // Claim a different diff id for the base layer.
    let wrong = Digest::of_bytes(b"not the diff id");
    let layer = ChainLayer {
        blob: img.layers[0].0.clone(),
        media_type: Compression::Gzip.oci_media_type().to_string(),
        diff_id: wrong.clone(),
        chain_id: wrong.clone(),
        parent: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let unpacker = ChainUnpacker::new(
        store.content().clone(),
        store.snapshots().clone(),
        ApplyOptions::default(),
        runtime.handle().clone(),
    );
    let err = StoreError::from(unpacker.unpack_all(&[layer]).unwrap_err());
    let msg = err.to_string();
    assert!(matches!(err, StoreError::DiffIdMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&img.layers[0].0.to_string())
            && msg.contains(&wrong.to_string())
            && msg.contains(&img.layers[0].1.to_string()),
        "{msg}"
    );
    assert!(store.snapshots().get(&wrong).unwrap().is_none());
    assert!(store.snapshots().list().unwrap().is_empty());
}

#[test]
fn remove_and_prune() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let a = put_image(store.content(), &layers(), Compression::Gzip, config());
    let b_layers = vec![RawTar::new().file("only-b", b"b").finish()];
    let b = put_image(store.content(), &b_layers, Compression::Gzip, json!({}));
    let ra = Reference::parse("a:1").unwrap();
    store.record_image(&ra, &a.manifest, &a.config).unwrap();
    store
        .record_image(&Reference::parse("a:2").unwrap(), &a.manifest, &a.config)
        .unwrap();
    store
        .record_image(&Reference::parse("b").unwrap(), &b.manifest, &b.config)
        .unwrap();
    let snaps_a = store.unpack_layers("a:1").unwrap();
    let snaps_b = store.unpack_layers("b").unwrap();
    // a stray blob and a partial download
    let stray = store.content().write_blob(b"stray").unwrap();
    {
        use std::io::Write;
        let mut ing = store
            .content()
            .ingest(&Digest::of_bytes(b"partial!"), None)
            .unwrap();
        ing.write_all(b"part").unwrap();
    }

    // untag one of two names: image stays
    let r = store.remove("a:1", |_| false).unwrap();
    assert_eq!(r.untagged, vec!["docker.io/library/a:1".to_string()]);
    assert_eq!(r.deleted, None);
    // the last name, while in use: refused
    let err = store.remove("a:2", |_| true).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(store.resolve("a:2").is_ok());
    // b removed by id
    let r = store.remove(b.config.short(), |_| false).unwrap();
    assert_eq!(r.deleted, Some(b.manifest.clone()));
    assert!(store.resolve("b").is_err());

    // b's snapshot is "in use" by a container: prune must keep it, but drop b's blobs
    let in_use: HashSet<u64> = [snaps_b[0].id].into();
    let report = store.prune(&in_use).unwrap();
    assert!(report.blobs_removed.contains(&stray));
    assert!(report.blobs_removed.contains(&b.manifest));
    assert!(report.blobs_removed.contains(&b.layers[0].0));
    assert!(!report.blobs_removed.contains(&a.manifest));
    assert!(report.snapshots_removed.is_empty());
    assert!(snaps_b[0].path.exists());
    assert!(snaps_a.iter().all(|s| s.path.exists()));
    assert!(store.content().contains(&a.layers[1].0));
    assert!(!store.content().contains(&stray));
    assert!(
        fs::read_dir(store.content().ingest_dir())
            .unwrap()
            .next()
            .is_none(),
        "partial removed"
    );

    // no longer in use: its snapshot goes
    let report = store.prune(&HashSet::new()).unwrap();
    assert_eq!(report.snapshots_removed, vec![snaps_b[0].id]);
    assert!(!snaps_b[0].path.exists());

    // remove a: everything goes
    store.remove("a:2", |_| false).unwrap();
    let report = store.prune(&HashSet::new()).unwrap();
    assert_eq!(report.snapshots_removed.len(), 2);
    assert!(store.content().list().unwrap().is_empty());
    assert!(store.snapshots().list().unwrap().is_empty());
}

#[test]
fn prune_waits_for_leases() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let lease = store.lease().unwrap();
    let d = store.content().write_blob(b"being pulled").unwrap();
    let s2 = store.clone();
    let t = std::thread::spawn(move || s2.prune(&HashSet::new()).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !t.is_finished(),
        "prune must wait while a pull holds a lease"
    );
    assert!(store.content().contains(&d));
    drop(lease);
    let report = t.join().unwrap();
    assert_eq!(report.blobs_removed, vec![d]);
}

#[test]
fn record_rejects_inconsistent_images() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let img = put_image(store.content(), &layers(), Compression::Gzip, config());
    let other = Digest::of_bytes(b"x");
    let err = store
        .record_image(&Reference::parse("x").unwrap(), &img.manifest, &other)
        .unwrap_err();
    assert!(err.to_string().contains(&other.to_string()), "{err}");
    // a manifest missing from the store names the digest
    let err = store
        .record_image(&Reference::parse("x").unwrap(), &other, &img.config)
        .unwrap_err();
    assert!(err.to_string().contains(&other.to_string()), "{err}");
}

#[test]
fn truncated_layer_error_names_layer_and_entry() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let big = vec![7u8; 300_000];
    let tar = RawTar::new().file("a/big", &big).finish();
    let gz = compress(&tar, Compression::Gzip);
    let cut = gz[..gz.len() / 2].to_vec();
    let layer = Digest::of_bytes(&cut);
    let err = apply_blob(
        std::io::Cursor::new(cut),
        Compression::Gzip,
        &layer,
        &Digest::of_bytes(&tar),
        tmp.path(),
        &ApplyOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&layer.to_string()), "{err}");
    assert!(err.contains("a/big"), "{err}");
}

#[test]
fn failing_lower_layer_fails_the_parallel_unpack_in_order() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let img = put_image(store.content(), &layers(), Compression::Gzip, config());
    // Re-issue the image with a wrong DiffID for the base layer.
    let mut cfg: serde_json::Value = serde_json::from_slice(&img.config_bytes).unwrap();
    let wrong = Digest::of_bytes(b"wrong");
    cfg["rootfs"]["diff_ids"][0] = json!(wrong.to_string());
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cfg_digest = store.content().write_blob(&cfg_bytes).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest_bytes).unwrap();
    m["config"]["digest"] = json!(cfg_digest.to_string());
    m["config"]["size"] = json!(cfg_bytes.len());
    let m_digest = store
        .content()
        .write_blob(&serde_json::to_vec(&m).unwrap())
        .unwrap();
    store
        .record_image(&Reference::parse("broken").unwrap(), &m_digest, &cfg_digest)
        .unwrap();
    let err = store.unpack_layers("broken").unwrap_err();
    assert!(
        matches!(&err, StoreError::DiffIdMismatch { expected, .. } if expected == &wrong),
        "{err}"
    );
    assert!(store.snapshots().list().unwrap().is_empty());
}

//! Local images end to end with the project's fixture images: load (layout, OCI archive,
//! docker save), unpack into overlay snapshots, a real overlay mount of the chain, flatten,
//! and a corrupt blob. Needs root (owners, device nodes, trusted.* xattrs, mount).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zlayer_image::flatten::unpack_image_to;
use zlayer_image::load::{load, load_with, LoadOptions};
use zlayer_image::store::StoreError;
use zlayer_image::{Digest, ImageStore};
use zlayer_testkit::fixtures::{self, archive, rules};

fn opts(repo: &str) -> LoadOptions {
    LoadOptions {
        repository: Some(repo.to_string()),
        ..Default::default()
    }
}

fn lgetxattr(p: &Path, key: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let k = std::ffi::CString::new(key).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

/// An overlay mount (read-only, lowerdirs only) unmounted on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn mount(layers_base_first: &[PathBuf], at: &Path) -> Overlay {
        fs::create_dir_all(at).unwrap();
        let lower: Vec<String> = layers_base_first
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let data = format!("lowerdir={}", lower.join(":"));
        nix::mount::mount(
            Some("overlay"),
            at,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(data.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount -t overlay -o {data} {}: {e}", at.display()));
        Overlay(at.to_path_buf())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn busybox_layout_loads_unpacks_and_flattens() {
    zlayer_testkit::require_root!();
    let layout = fixtures::cached("busybox").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("root")).unwrap();
    let loaded = load_with(&store, &layout.dir, &opts("busybox")).unwrap();
    let names: Vec<String> = loaded
        .iter()
        .flat_map(|i| i.names.iter().map(|n| n.to_string()))
        .collect();
    assert!(
        names.contains(&"docker.io/library/busybox:latest".to_string()),
        "{names:?}"
    );
    let rec = store.resolve("busybox").unwrap();
    assert_eq!(rec.manifest_digest.to_string(), layout.manifest_digest);
    assert_eq!(rec.config_digest.to_string(), layout.config_digest);
    // the multi-arch tag resolves to the host's (amd64) manifest
    assert_eq!(
        store
            .resolve("busybox:multiarch")
            .unwrap()
            .manifest_digest
            .to_string(),
        layout.manifest_digest
    );

    let snaps = store.unpack_layers("busybox").unwrap();
    assert_eq!(snaps.len(), layout.layers.len());
    let busybox = snaps[0].path.join("bin/busybox");
    assert!(busybox.is_file());
    assert!(fs::metadata(&busybox).unwrap().permissions().mode() & 0o111 != 0);

    let out = tmp.path().join("flat");
    let report = unpack_image_to(&store, "busybox", &out).unwrap();
    assert_eq!(report.layers, layout.layers.len());
    assert!(out.join("bin/busybox").is_file());
    // the flattened tree is plain: never an overlay whiteout device
    assert!(!has_whiteout_devices(&out));
    // refuses a non-empty target
    assert!(unpack_image_to(&store, "busybox", &out).is_err());

    let details = store.inspect("busybox").unwrap();
    assert_eq!(details.layers.len(), layout.layers.len());
    assert_eq!(details.layers[0].snapshot, Some(snaps[0].id));
}

fn has_whiteout_devices(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_char_device() {
                use std::os::unix::fs::MetadataExt;
                if m.rdev() == 0 {
                    return true;
                }
            } else if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    false
}

#[test]
fn rules_fixture_snapshots_overlay_and_flatten_match_the_expected_tree() {
    zlayer_testkit::require_root!();
    let layout = fixtures::cached("rules").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("root")).unwrap();
    load_with(&store, &layout.dir, &opts("rules")).unwrap();
    let snaps = store.unpack_layers("rules").unwrap();
    assert_eq!(snaps.len(), 3);

    // Layer 2 stores its whiteouts the overlayfs way.
    let l2 = &snaps[1].path;
    for wh in ["gone", "a/deleted.txt"] {
        let m = fs::symlink_metadata(l2.join(wh)).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "{wh} is not a whiteout device"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(m.rdev(), 0, "{wh}");
    }
    assert_eq!(
        lgetxattr(&l2.join("opaque"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(!l2.join(".wh.gone").exists());
    assert!(!l2.join("opaque/.wh..wh..opq").exists());
    // the cross-layer hardlink was copied up
    assert!(l2.join("shared/link-to-lower.txt").is_file());

    // A real overlay mount of the chain shows exactly the expected tree.
    let dirs = store.rootfs_layers("rules").unwrap();
    let mnt = tmp.path().join("merged");
    {
        let _ov = Overlay::mount(&dirs, &mnt);
        rules::verify_tree(
            &mnt,
            &rules::VerifyOptions {
                cross_layer_hardlinks: false,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("overlay view differs:\n{e}"));
    }

    // Flattened: the same tree as plain files, cross-layer hardlink preserved.
    let flat = tmp.path().join("flat");
    unpack_image_to(&store, "rules", &flat).unwrap();
    rules::verify_tree(&flat, &rules::VerifyOptions::default())
        .unwrap_or_else(|e| panic!("flattened tree differs:\n{e}"));
}

/// Layers unpacked in parallel (each without its lowers, `defer_lower`), then finished with
/// `apply_deferred` once the lowers exist, give the same overlay view.
#[test]
fn rules_layers_unpacked_in_parallel_then_finished() {
    use zlayer_image::unpack::{apply_deferred, apply_layer, ApplyOptions};
    zlayer_testkit::require_root!();
    let layout = fixtures::cached("rules").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..layout.layers.len())
        .map(|i| tmp.path().join(format!("l{i}")))
        .collect();
    let defer = ApplyOptions {
        defer_lower: true,
        sync: false,
        ..Default::default()
    };
    let handles: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            fs::create_dir_all(dir).unwrap();
            let layout = layout.clone();
            let dir = dir.clone();
            let defer = defer.clone();
            std::thread::spawn(move || {
                let tar = archive::open_layer_tar(&layout, i).unwrap();
                apply_layer(&dir, tar, &defer).unwrap()
            })
        })
        .collect();
    let stats: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        !stats[1].deferred.links.is_empty(),
        "layer 2 links into layer 1"
    );
    for (i, s) in stats.iter().enumerate() {
        let lower_dirs: Vec<PathBuf> = dirs[..i].iter().rev().cloned().collect();
        let opts = ApplyOptions {
            lower_dirs,
            sync: false,
            ..Default::default()
        };
        apply_deferred(&dirs[i], &s.deferred, &opts).unwrap();
    }
    let mnt = tmp.path().join("merged");
    let _ov = Overlay::mount(&dirs, &mnt);
    rules::verify_tree(
        &mnt,
        &rules::VerifyOptions {
            cross_layer_hardlinks: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("overlay view differs:\n{e}"));
}

#[test]
fn oci_archive_and_docker_save_load_the_same_image() {
    zlayer_testkit::require_root!();
    let layout = fixtures::cached("rules").unwrap();
    let tmp = tempfile::tempdir().unwrap();

    let oci_tar = tmp.path().join("rules-oci.tar");
    archive::write_oci_archive(&layout, &oci_tar).unwrap();
    let store = ImageStore::open(&tmp.path().join("root1")).unwrap();
    let names = load(&store, &oci_tar).unwrap();
    assert_eq!(
        names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        vec!["docker.io/library/rules-oci:latest".to_string()]
    );
    let rec = store.resolve("rules-oci").unwrap();
    assert_eq!(rec.manifest_digest.to_string(), layout.manifest_digest);

    // the same archive gzip-compressed (what `skopeo copy oci-archive:` users often keep)
    let gz = tmp.path().join("rules-oci.tar.gz");
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(
            fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        e.write_all(&fs::read(&oci_tar).unwrap()).unwrap();
        e.finish().unwrap();
    }
    let store_gz = ImageStore::open(&tmp.path().join("root-gz")).unwrap();
    load(&store_gz, &gz).unwrap();
    assert_eq!(
        store_gz
            .resolve("rules-oci")
            .unwrap()
            .manifest_digest
            .to_string(),
        layout.manifest_digest
    );

    let docker_tar = tmp.path().join("docker-save.tar");
    archive::write_docker_save(&layout, "example.com/team/rules:v1", &docker_tar).unwrap();
    let store = ImageStore::open(&tmp.path().join("root2")).unwrap();
    let names = load(&store, &docker_tar).unwrap();
    assert_eq!(
        names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        vec!["example.com/team/rules:v1".to_string()]
    );
    let rec = store.resolve("example.com/team/rules:v1").unwrap();
    // same image id (config digest) as the layout
    assert_eq!(rec.config_digest.to_string(), layout.config_digest);
    let flat = tmp.path().join("flat");
    unpack_image_to(&store, "example.com/team/rules:v1", &flat).unwrap();
    rules::verify_tree(&flat, &rules::VerifyOptions::default())
        .unwrap_or_else(|e| panic!("docker-save tree differs:\n{e}"));
    // and as snapshots
    assert_eq!(
        store
            .unpack_layers(&rec.config_digest.to_string())
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn corrupt_layer_blob_in_layout_is_rejected_by_name() {
    let layout = fixtures::cached("busybox").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let copy = fixtures::copy_layout(&layout, &tmp.path().join("layout")).unwrap();
    let layer = &copy.layers[0];
    let blob = copy.blob_path(&layer.digest);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let store = ImageStore::open(&tmp.path().join("root")).unwrap();
    let err = load_with(&store, &copy.dir, &opts("busybox")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&layer.digest), "{msg}");
    assert!(msg.contains(&Digest::of_bytes(&bytes).to_string()), "{msg}");
    let d = Digest::parse(&layer.digest).unwrap();
    assert!(!store.content().contains(&d));
    assert!(matches!(
        store.resolve("busybox"),
        Err(StoreError::NotFound(_))
    ));
    // nothing half-written stays behind after a prune
    store.prune(&HashSet::new()).unwrap();
    assert!(fs::read_dir(store.content().ingest_dir())
        .unwrap()
        .next()
        .is_none());
}

/// The whole error chain, as the daemon reports it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Loading a file that is not an image names the file and what was expected, and never
/// echoes its content (`load -i /etc/shadow` printed the file's first lines).
#[test]
fn load_of_a_non_image_file_does_not_echo_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("root")).unwrap();
    let shadow_like = tmp.path().join("shadow");
    let mut text = String::new();
    for user in ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp"] {
        text.push_str(&format!(
            "{user}:$6$SECRETSALT$SECRETHASHSECRETHASHSECRETHASHSECRETHASH:19700:0:99999:7:::\n"
        ));
    }
    fs::write(&shadow_like, text.repeat(8)).unwrap();
    // A tar whose manifest.json has the wrong shape, with a secret in the wrong place.
    let bad_json = tmp.path().join("bad-manifest.tar");
    {
        let mut tar = tar::Builder::new(fs::File::create(&bad_json).unwrap());
        let body = br#"[{"Config": ["SECRETVALUE"], "Layers": "SECRETVALUE"}]"#;
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "manifest.json", &body[..]).unwrap();
        tar.finish().unwrap();
    }
    let mut inputs = vec![shadow_like, bad_json];
    if Path::new("/etc/shadow").is_file() {
        inputs.push(PathBuf::from("/etc/shadow"));
    }
    for input in inputs {
        let err = load(&store, &input).unwrap_err();
        let msg = chain(&err);
        assert!(msg.contains(&input.display().to_string()), "{msg}");
        assert!(msg.contains("expected"), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
        if input == Path::new("/etc/shadow") {
            let content = fs::read_to_string(&input).unwrap();
            for line in content.lines().filter(|l| l.len() > 8) {
                assert!(!msg.contains(line), "{msg}");
                let hash = line.split(':').nth(1).unwrap_or("");
                assert!(hash.len() < 4 || !msg.contains(hash), "{msg}");
            }
        }
    }
}

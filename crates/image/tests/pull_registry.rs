//! Pulls from a real `docker-registry` on loopback: by tag and digest, platform selection,
//! dropped connections, corrupt blobs, basic auth, SIGKILL mid-pull and bounded memory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use zlayer_image::pull::{PullError, PullEvent};
use zlayer_image::registry::{Credentials, Platform, RegistryError};
use zlayer_image::Digest;
use zlayer_testkit::fixtures::{self, Layout};
use zlayer_testkit::{push, LocalRegistry};

/// Root, skopeo and docker-registry are needed; returns None (skip) outside CI when missing.
fn prerequisites() -> Option<()> {
    if !zlayer_testkit::prereq::require_root() {
        return None;
    }
    zlayer_testkit::prereq::require_bin("skopeo")?;
    zlayer_testkit::prereq::require_bin("docker-registry")?;
    Some(())
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn registry_with(fixture: &str, dest: &str) -> (LocalRegistry, Layout) {
    let reg = LocalRegistry::start().expect("start docker-registry");
    let layout = fixtures::cached(fixture).expect("build fixture");
    push::push_layout(&layout, &reg.host(), dest).expect("push fixture");
    (reg, layout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_by_tag_then_by_digest_reusing_layers() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/busybox:v1");
    let root = tempfile::tempdir().unwrap();

    let (r, events) = pull_collect(
        root.path(),
        test_config(),
        &format!("{}/test/busybox:v1", reg.host()),
        &amd64(),
    )
    .await;
    let img = r.expect("pull by tag");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);
    assert_eq!(img.config.digest.to_string(), layout.config_digest);
    assert_eq!(img.layers.len(), layout.layers.len());
    for (got, want) in img.layers.iter().zip(&layout.layers) {
        assert_eq!(got.descriptor.digest.to_string(), want.digest);
        assert_eq!(got.diff_id.to_string(), want.diff_id);
    }
    assert!(img.layers[0].snapshot.path.join("bin/busybox").is_file());
    let recorded = stores(root.path())
        .resolve(&format!("{}/test/busybox:v1", reg.host()))
        .expect("image recorded under its name");
    assert_eq!(recorded.manifest_digest, img.manifest_digest);
    assert_eq!(img.record.config_digest, img.config.digest);
    let content = stores(root.path()).content().clone();
    for d in [&layout.manifest_digest, &layout.config_digest]
        .into_iter()
        .chain(layout.layers.iter().map(|l| &l.digest))
    {
        assert!(
            content.contains(&Digest::parse(d).unwrap()),
            "{d} not stored"
        );
    }
    assert!(matches!(events.first(), Some(PullEvent::Resolving { .. })));
    assert!(matches!(events.last(), Some(PullEvent::Complete { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, PullEvent::Extracting { .. })));
    assert_store_consistent(root.path());

    // Same image by digest: every layer is already unpacked.
    let (r, events) = pull_collect(
        root.path(),
        test_config(),
        &format!("{}/test/busybox@{}", reg.host(), layout.manifest_digest),
        &amd64(),
    )
    .await;
    let again = r.expect("pull by digest");
    assert_eq!(again.manifest_digest, img.manifest_digest);
    assert_eq!(again.layers[0].snapshot, img.layers[0].snapshot);
    let exists = events
        .iter()
        .filter(|e| matches!(e, PullEvent::AlreadyExists { .. }))
        .count();
    assert_eq!(exists, layout.layers.len());

    // A digest the registry does not have names the image.
    let missing = Digest::of_bytes(b"nothing");
    let (r, _) = pull_collect(
        root.path(),
        test_config(),
        &format!("{}/test/busybox@{missing}", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err();
    assert!(
        matches!(err, PullError::Registry(RegistryError::NotFound { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selects_platform_from_index() {
    if prerequisites().is_none() {
        return;
    }
    let reg = LocalRegistry::start().expect("start docker-registry");
    let layout = fixtures::cached("busybox").unwrap();
    let index = push::push_multiarch(&layout, &reg.host(), "test/multi:v1").unwrap();
    let reference = format!("{}/test/multi:v1", reg.host());
    for entry in &layout.platforms {
        let root = tempfile::tempdir().unwrap();
        let platform = Platform::parse(&entry.platform).unwrap();
        let (r, _) = pull_collect(root.path(), test_config(), &reference, &platform).await;
        let img = r.unwrap_or_else(|e| panic!("pull {}: {e}", entry.platform));
        assert_eq!(img.manifest_digest.to_string(), entry.manifest_digest);
        assert_eq!(img.config.digest.to_string(), entry.config_digest);
        assert_eq!(img.index_digest.map(|d| d.to_string()), Some(index.clone()));
        assert_eq!(img.platform, platform);
    }
    let root = tempfile::tempdir().unwrap();
    let (r, _) = pull_collect(
        root.path(),
        test_config(),
        &reference,
        &Platform::parse("linux/s390x").unwrap(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("linux/s390x"), "{err}");
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_dropped_connections() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("big-24", "test/big:v1");
    // Connections are cut after 512 KiB, six times: each layer needs Range resumes.
    let proxy = FlakyProxy::start(
        reg.addr(),
        ProxyMode {
            drop_after: Some(512 << 10),
            max_drops: 6,
            ..ProxyMode::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let (r, events) = pull_collect(
        root.path(),
        test_config(),
        &format!("{}/test/big:v1", proxy.host()),
        &amd64(),
    )
    .await;
    let img = r.expect("pull through a flaky proxy");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);
    assert!(proxy.drops.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let retries = events
        .iter()
        .filter(|e| matches!(e, PullEvent::Retrying { .. }))
        .count();
    assert!(retries >= 1, "no retry was needed: {events:?}");
    // Resumed, not restarted: the bytes relayed are the blobs once, plus headers and
    // manifests, not the blobs plus the prefixes received before each cut.
    let relayed = proxy.relayed.load(std::sync::atomic::Ordering::SeqCst);
    let blobs = layout.total_layer_size();
    assert!(
        relayed < blobs + (256 << 10),
        "{relayed} bytes relayed for {blobs} bytes of layers: downloads restarted instead of resuming"
    );
    assert_store_consistent(root.path());
    assert!(ingest_files(root.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_is_rejected_and_deleted() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/corrupt:v1");
    let layer = &layout.layers[0];
    // Same length, different bytes: the registry serves it without noticing.
    let data = registry_blob_data(reg.dir(), &layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let actual = Digest::of_bytes(&bytes);

    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/test/corrupt:v1", reg.host());
    let (r, _) = pull_collect(root.path(), test_config(), &reference, &amd64()).await;
    let err = r.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PullError::BlobVerification { .. }),
        "unexpected error: {msg}"
    );
    for needle in [
        reference.as_str(),
        layer.digest.as_str(),
        &actual.to_string(),
    ] {
        assert!(msg.contains(needle), "{msg:?} does not name {needle}");
    }
    let digest = Digest::parse(&layer.digest).unwrap();
    assert!(!stores(root.path()).content().contains(&digest));
    assert!(ingest_files(root.path()).is_empty(), "partial left behind");
    assert_store_consistent(root.path());
}

/// Starts a second `docker-registry` with htpasswd auth over the storage of `reg`.
fn start_auth_registry(reg: &LocalRegistry, user: &str, password: &str) -> AuthRegistry {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash(password, 4).unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
    let port = zlayer_testkit::registry::free_loopback_port().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n\
             auth:\n  htpasswd:\n    realm: zlayer-test\n    path: {}\n",
            reg.dir().join("storage").display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let r = AuthRegistry {
        child,
        host: format!("127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&r.host).is_err() {
        assert!(Instant::now() < deadline, "auth registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

struct AuthRegistry {
    child: std::process::Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_config_and_docker_config() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/private:v1");
    let auth = start_auth_registry(&reg, "alice", "wonderland");
    let reference = format!("{}/test/private:v1", auth.host);

    // No credentials: refused, and the error says none were configured.
    let root = tempfile::tempdir().unwrap();
    let (r, _) = pull_collect(root.path(), test_config(), &reference, &amd64()).await;
    let err = r.unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Registry(RegistryError::Unauthorized {
                had_credentials: false,
                ..
            })
        ),
        "{err}"
    );

    // Wrong password: refused, naming rejected credentials.
    let mut cfg = test_config();
    cfg.auths.insert(
        auth.host.clone(),
        Credentials::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        },
    );
    let (r, _) = pull_collect(root.path(), cfg, &reference, &amd64()).await;
    let err = r.unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");

    // Daemon config credentials.
    let mut cfg = test_config();
    cfg.auths.insert(
        auth.host.clone(),
        Credentials::Basic {
            username: "alice".into(),
            password: "wonderland".into(),
        },
    );
    let (r, _) = pull_collect(root.path(), cfg, &reference, &amd64()).await;
    assert_eq!(
        r.expect("pull with daemon credentials")
            .manifest_digest
            .to_string(),
        layout.manifest_digest
    );

    // ~/.docker/config.json style credentials, into a fresh root.
    let docker_dir = tempfile::tempdir().unwrap();
    let docker_config = docker_dir.path().join("config.json");
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
    std::fs::write(
        &docker_config,
        format!(
            r#"{{"auths":{{"http://{}":{{"auth":"{token}"}}}}}}"#,
            auth.host
        ),
    )
    .unwrap();
    let mut cfg = test_config();
    cfg.ignore_docker_config = false;
    cfg.docker_config = Some(docker_config);
    let root2 = tempfile::tempdir().unwrap();
    let (r, _) = pull_collect(root2.path(), cfg, &reference, &amd64()).await;
    r.expect("pull with docker config credentials");
}

fn pull_bin() -> &'static str {
    env!("CARGO_BIN_EXE_zlayer-image-pull")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_pull_then_pull_again() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("big-32", "test/kill:v1");
    // Slow enough (~8 MiB/s) that the child is surely mid-download when killed.
    let slow = FlakyProxy::start(
        reg.addr(),
        ProxyMode {
            rate: Some(8 << 20),
            ..ProxyMode::default()
        },
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(pull_bin())
        .args(["--root", root.path().to_str().unwrap(), "--events"])
        .arg(format!("{}/test/kill:v1", slow.host()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    // Wait (off the runtime) until some layer has >1 MiB on disk, then SIGKILL.
    let killed_at = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Ok(PullEvent::Downloading { done, total, .. }) = serde_json::from_str(&line) {
                if done > (1 << 20) && done < total {
                    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    return Some(done);
                }
            }
        }
        None
    })
    .await
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        killed_at.is_some(),
        "child finished before it could be killed: {status}"
    );
    assert!(!status.success());
    assert_store_consistent(root.path());
    assert!(
        !ingest_files(root.path()).is_empty(),
        "expected a partial download to resume"
    );

    // Pull again in-process, at full speed: resumes and succeeds.
    let direct = format!("{}/test/kill:v1", reg.host());
    let (r, _) = pull_collect(root.path(), test_config(), &direct, &amd64()).await;
    let img = r.expect("pull after SIGKILL");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);
    assert_store_consistent(root.path());
    assert!(ingest_files(root.path()).is_empty());
    for l in &layout.layers {
        assert!(stores(root.path())
            .content()
            .contains(&Digest::parse(&l.digest).unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_the_big_image_keeps_memory_bounded() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("big", "test/big:v1");
    assert!(layout.total_layer_size() > 100 << 20);
    let root = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let root = root.path().to_path_buf();
        let reference = format!("{}/test/big:v1", reg.host());
        move || {
            Command::new(pull_bin())
                .args(["--root", root.to_str().unwrap(), "--memory-report"])
                .arg(reference)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let start = report["vmhwm_start_kib"].as_u64().unwrap();
    let end = report["vmhwm_end_kib"].as_u64().unwrap();
    eprintln!("peak RSS: {start} KiB before the pull, {end} KiB after");
    assert!(
        end.saturating_sub(start) < 64 * 1024,
        "pull grew peak RSS by {} KiB",
        end - start
    );
    assert_store_consistent(root.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_blob_reader_resumes_and_verifies() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("big-24", "test/reader:v1");
    let proxy = FlakyProxy::start(
        reg.addr(),
        ProxyMode {
            drop_after: Some(300 << 10),
            max_drops: 3,
            ..ProxyMode::default()
        },
    )
    .await;
    let client = zlayer_image::registry::RegistryClient::new(test_config()).unwrap();
    let reference =
        zlayer_image::Reference::parse(&format!("{}/test/reader:v1", proxy.host())).unwrap();
    let layer = layout.layers[1].clone();
    let want = std::fs::read(layout.blob_path(&layer.digest)).unwrap();
    let handle = tokio::runtime::Handle::current();
    let digest = Digest::parse(&layer.digest).unwrap();
    // The reader is for synchronous code: drive it from a plain thread.
    let got = std::thread::spawn(move || {
        let mut r = client.blob_reader(handle, &reference, &digest);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).map(|_| out)
    })
    .join()
    .unwrap()
    .expect("read blob through a flaky proxy");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "blob content differs");
    assert!(proxy.drops.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A corrupted blob fails at the end with InvalidData naming both digests.
    let data = registry_blob_data(reg.dir(), &layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let client = zlayer_image::registry::RegistryClient::new(test_config()).unwrap();
    let reference =
        zlayer_image::Reference::parse(&format!("{}/test/reader:v1", reg.host())).unwrap();
    let handle = tokio::runtime::Handle::current();
    let digest = Digest::parse(&layer.digest).unwrap();
    let err = std::thread::spawn(move || {
        let mut r = client.blob_reader(handle, &reference, &digest);
        std::io::Read::read_to_end(&mut r, &mut Vec::new())
    })
    .join()
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(&layer.digest), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_a_mirror_skipping_a_dead_one() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/mirrored:v1");
    // The image's own registry does not exist; the first mirror is down; the second works.
    let dead = format!(
        "127.0.0.1:{}",
        zlayer_testkit::registry::free_loopback_port().unwrap()
    );
    let origin = format!(
        "127.0.0.1:{}",
        zlayer_testkit::registry::free_loopback_port().unwrap()
    );
    let mut cfg = test_config();
    cfg.mirrors
        .insert(origin.clone(), vec![dead.clone(), reg.host()]);
    let root = tempfile::tempdir().unwrap();
    let (r, _) = pull_collect(
        root.path(),
        cfg,
        &format!("{origin}/test/mirrored:v1"),
        &amd64(),
    )
    .await;
    let img = r.expect("pull through mirror");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);
    assert_store_consistent(root.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_layer_is_read_from_its_urls() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/has-blob:v1");
    let layer = &layout.layers[0];
    let want = std::fs::read(layout.blob_path(&layer.digest)).unwrap();
    // Repository `test/foreign` lacks the blob; the descriptor's URL serves it.
    let desc = zlayer_image::registry::Descriptor {
        media_type: layer.media_type.clone(),
        digest: Digest::parse(&layer.digest).unwrap(),
        size: layer.size,
        urls: vec![format!(
            "http://{}/v2/test/has-blob/blobs/{}",
            reg.host(),
            layer.digest
        )],
        annotations: Default::default(),
    };
    let client = zlayer_image::registry::RegistryClient::new(test_config()).unwrap();
    let reference =
        zlayer_image::Reference::parse(&format!("{}/test/foreign:v1", reg.host())).unwrap();
    let handle = tokio::runtime::Handle::current();
    let got = std::thread::spawn(move || {
        let mut r = client.blob_reader_for(handle, &reference, &desc);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).map(|_| out)
    })
    .join()
    .unwrap()
    .expect("read a foreign layer from its urls");
    assert!(got == want, "foreign layer content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_server_errors() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/flaky5xx:v1");
    let proxy = FlakyProxy::start(
        reg.addr(),
        ProxyMode {
            fail_first: 3,
            ..ProxyMode::default()
        },
    )
    .await;
    let reference = format!("{}/test/flaky5xx:v1", proxy.host());
    let root = tempfile::tempdir().unwrap();
    let (r, _) = pull_collect(root.path(), test_config(), &reference, &amd64()).await;
    let img = r.expect("pull after 503s");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);

    // Without retries the 503 is the error.
    let proxy = FlakyProxy::start(
        reg.addr(),
        ProxyMode {
            fail_first: 100,
            ..ProxyMode::default()
        },
    )
    .await;
    let mut cfg = test_config();
    cfg.retries = 1;
    let root = tempfile::tempdir().unwrap();
    let (r, _) = pull_collect(
        root.path(),
        cfg,
        &format!("{}/test/flaky5xx:v1", proxy.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("503"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_rules_fixture_matches_the_expected_tree_through_overlay() {
    if prerequisites().is_none() || !zlayer_testkit::prereq::require_filesystem("overlay") {
        return;
    }
    let (reg, layout) = registry_with("rules", "test/rules:v1");
    let root = tempfile::tempdir().unwrap();
    let reference = format!("{}/test/rules:v1", reg.host());
    let (r, _) = pull_collect(root.path(), test_config(), &reference, &amd64()).await;
    let img = r.expect("pull rules");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);
    // Layers were applied in parallel without their lowers; the cross-layer hardlink was
    // still copied up once the lower snapshot existed.
    assert!(img.layers[1]
        .snapshot
        .path
        .join("shared/link-to-lower.txt")
        .is_file());

    // A real overlay mount of the pulled chain shows exactly the expected tree.
    let lowers: Vec<String> = img
        .layers
        .iter()
        .rev()
        .map(|l| l.snapshot.path.display().to_string())
        .collect();
    let mnt = root.path().join("merged");
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lowers.join(":")).as_str()),
    )
    .expect("mount overlay");
    let verified = zlayer_testkit::fixtures::rules::verify_tree(
        &mnt,
        &zlayer_testkit::fixtures::rules::VerifyOptions {
            cross_layer_hardlinks: false,
            ..Default::default()
        },
    );
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    verified.unwrap_or_else(|e| panic!("overlay view of the pulled image differs:\n{e}"));
}

/// A partial download left behind by a pull from a corrupting registry (as a SIGKILL mid-pull
/// leaves it) does not poison the next pull from an honest registry: the resumed blob fails
/// verification, is discarded and downloaded again from zero within the same pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_partial_download_is_restarted_from_zero() {
    if prerequisites().is_none() {
        return;
    }
    let (reg, layout) = registry_with("busybox", "test/repartial:v1");
    let root = tempfile::tempdir().unwrap();
    drop(stores(root.path()));
    let layer = &layout.layers[0];
    let data = std::fs::read(layout.blob_path(&layer.digest)).unwrap();
    let mut partial = data[..data.len() / 2].to_vec();
    for b in partial.iter_mut().step_by(97) {
        *b ^= 0x5a;
    }
    let hex = layer.digest.trim_start_matches("sha256:");
    std::fs::write(
        root.path()
            .join("content/ingest")
            .join(format!("{hex}.data")),
        &partial,
    )
    .unwrap();
    assert_eq!(ingest_files(root.path()).len(), 1);

    let reference = format!("{}/test/repartial:v1", reg.host());
    let (r, events) = pull_collect(root.path(), test_config(), &reference, &amd64()).await;
    let img = r.expect("the first pull after a corrupt partial download succeeds");
    assert_eq!(img.manifest_digest.to_string(), layout.manifest_digest);
    let restarted = events.iter().any(|e| {
        matches!(e, PullEvent::Retrying { layer: l, error, .. }
            if l.to_string() == layer.digest && error.contains("starting again from zero"))
    });
    assert!(restarted, "no restart reported: {events:?}");
    assert_store_consistent(root.path());
    assert!(ingest_files(root.path()).is_empty());
    assert!(stores(root.path())
        .content()
        .contains(&Digest::parse(&layer.digest).unwrap()));
}

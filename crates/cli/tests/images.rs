//! Images through the daemon and the CLI, against Debian's docker-registry on a loopback port.

mod common;

use common::{run, TestDaemon};
use zlayer_testkit::{push, LocalRegistry};

fn registry_with_busybox() -> Option<(LocalRegistry, String)> {
    zlayer_testkit::prereq::require_bin("docker-registry")?;
    zlayer_testkit::prereq::require_bin("skopeo")?;
    if !zlayer_testkit::prereq::require_root() {
        return None;
    }
    let reg = LocalRegistry::start().expect("starting docker-registry");
    let layout = zlayer_testkit::cached("busybox").expect("busybox fixture");
    push::push_layout(&layout, &reg.host(), "test/busybox:1").expect("pushing the fixture");
    let image = format!("{}/test/busybox:1", reg.host());
    Some((reg, image))
}

#[test]
fn pull_list_inspect_unpack_remove() {
    let Some((_reg, image)) = registry_with_busybox() else {
        return;
    };
    let d = TestDaemon::start_host_net();
    let out = d.ok(&["pull", &image]);
    assert!(out.contains("Digest: sha256:"), "{out}");
    let images = d.ok(&["images"]);
    assert!(
        images.contains("test/busybox") && images.contains(" 1 "),
        "{images}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);

    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", &image])).unwrap();
    assert_eq!(inspect[0]["cmd"][0], "sh", "{inspect}");
    assert!(!inspect[0]["layers"].as_array().unwrap().is_empty());

    // A second pull finds everything in place.
    d.ok(&["pull", "-q", &image]);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("rootfs");
    d.ok(&["image", "unpack", &image, &target.display().to_string()]);
    assert!(target.join("bin/busybox").is_file());
    assert!(std::fs::read_to_string(target.join("etc/passwd"))
        .unwrap()
        .contains("root:"));

    let out = d.ok(&["rmi", &image]);
    assert!(out.contains("Untagged"), "{out}");
    assert!(!d.ok(&["images"]).contains("test/busybox"));
    let out = d.ok(&["image", "prune"]);
    assert!(out.contains("Removed"), "{out}");
    let blobs = d.root().join("content/blobs/sha256");
    assert_eq!(
        std::fs::read_dir(&blobs).map(|r| r.count()).unwrap_or(0),
        0,
        "prune left blobs"
    );
}

/// `GET /metrics` on `addr`, the body.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics listener");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the unlabelled sample `name` in a Prometheus text body.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

#[test]
fn metrics_count_pulled_bytes_and_containers() {
    let Some((_reg, image)) = registry_with_busybox() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = TestDaemon::start_host_net_with(&["--metrics-addr", &addr]);
    assert_eq!(sample(&scrape(&addr), "zlayer_pull_bytes_total"), 0);

    d.ok(&["pull", "-q", &image]);
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", &image])).unwrap();
    let layer_bytes: u64 = inspect[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(layer_bytes > 0);
    let body = scrape(&addr);
    assert_eq!(
        sample(&body, "zlayer_pull_bytes_total"),
        layer_bytes,
        "a cold pull downloads every layer once"
    );

    // A second pull finds everything stored: nothing more is downloaded.
    d.ok(&["pull", "-q", &image]);
    assert_eq!(
        sample(&scrape(&addr), "zlayer_pull_bytes_total"),
        layer_bytes
    );

    // A stopped container shows in the containers-by-state gauge; API latency is recorded.
    let (code, _, err) = run(
        &d,
        &["run", "--name", "m", "--network", "none", &image, "true"],
    );
    assert_eq!(code, 0, "{err}");
    let body = scrape(&addr);
    assert!(
        body.lines()
            .any(|l| l.starts_with("zlayer_containers{state=\"exited\"} 1")),
        "{body}"
    );
    assert!(
        body.contains("zlayer_api_request_duration_seconds_count{"),
        "{body}"
    );
}

#[test]
fn pull_by_digest_and_clear_errors() {
    let Some((reg, image)) = registry_with_busybox() else {
        return;
    };
    let d = TestDaemon::start_host_net();
    let digest = push::manifest_digest(&reg.host(), "test/busybox", "1").unwrap();
    let pinned = format!("{}/test/busybox@{digest}", reg.host());
    let out = d.ok(&["pull", &pinned]);
    assert!(out.contains(&digest), "{out}");

    let (code, _, err) = run(&d, &["pull", &format!("{}/test/nothere:1", reg.host())]);
    assert_ne!(code, 0);
    assert!(err.contains("nothere"), "{err}");
    let (code, _, err) = run(&d, &["pull", "Bad/Name"]);
    assert_ne!(code, 0);
    assert!(err.contains("lowercase"), "{err}");
    let (code, _, err) = run(&d, &["image", "inspect", "zlayer.local/absent:1"]);
    assert_ne!(code, 0);
    assert!(err.contains("no such image"), "{err}");
    drop(image);
}

#[test]
fn load_oci_layout_and_archives() {
    if !zlayer_testkit::prereq::require_root() {
        return;
    }
    let layout = zlayer_testkit::cached("busybox").expect("busybox fixture");
    let d = TestDaemon::start_host_net();
    let out = d.ok(&["load", "-i", &layout.dir.display().to_string()]);
    assert!(out.contains("Loaded image: "), "{out}");
    let (code, _, err) = run(&d, &["load", "-i", "/nonexistent/image.tar"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/image.tar"), "{err}");
}

#[test]
fn a_daemon_killed_mid_pull_leaves_a_consistent_store_and_the_next_pull_succeeds() {
    zlayer_testkit::require_bin!("docker-registry");
    zlayer_testkit::require_bin!("skopeo");
    if !zlayer_testkit::prereq::require_root() {
        return;
    }
    let reg = LocalRegistry::start().expect("registry");
    let layout = zlayer_testkit::cached("big-48").expect("big fixture");
    push::push_layout(&layout, &reg.host(), "test/big:1").expect("push");
    let image = format!("{}/test/big:1", reg.host());
    let mut d = TestDaemon::start_host_net();
    // Start a pull and SIGKILL the daemon while it downloads/unpacks.
    let mut pull = std::process::Command::new(common::BIN)
        .arg("--socket")
        .arg(d.socket())
        .args(["pull", "-q", &image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ingest = d.root().join("content/ingest");
    common::eventually(20, || {
        std::fs::read_dir(&ingest)
            .map(|r| r.count() > 0)
            .unwrap_or(false)
    });
    d.kill9();
    let _ = pull.wait();
    // Every blob visible as complete must be whole and verified.
    let blobs = d.root().join("content/blobs/sha256");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let data = std::fs::read(e.path()).unwrap();
            let actual = zlayer_image::Digest::of_bytes(&data);
            assert_eq!(actual.hex(), name, "blob {name} is not what its name says");
        }
    }
    d.spawn();
    let out = d.ok(&["pull", "-q", &image]);
    assert!(out.contains("Digest:"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    d.ok(&[
        "image",
        "unpack",
        &image,
        &dir.path().join("fs").display().to_string(),
    ]);
}

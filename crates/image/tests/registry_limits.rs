//! Registries that never end: endless or lying bodies are cut at their cap with flat memory,
//! stalls and silent servers fail on the progress timeout, retries stop at their budget.
//! Against a misbehaving registry of the test's own (`common::bad_registry`), on loopback.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bad_registry::{Answer, BadRegistry};
use common::*;
use zlayer_image::registry::{Platform, RegistryConfig};
use zlayer_image::Digest;

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

/// A gzip layer holding one small file; returns (layer, diff id).
fn small_layer() -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"hello from a small layer\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello", &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = Digest::of_bytes(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

fn quick_config(progress: u64, retries: u32) -> RegistryConfig {
    RegistryConfig {
        progress_timeout_secs: progress,
        document_timeout_secs: 5,
        retries,
        ..test_config()
    }
}

/// Reads `VmRSS` (KiB) of a running process.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What a `zlayer-image-pull` child did.
struct ChildRun {
    success: bool,
    stderr: String,
    /// VmHWM growth during the pull, from its `--memory-report`.
    hwm_growth_kib: u64,
    elapsed: Duration,
}

/// Pulls `reference` in a child process with `config`. Guards the machine: the child is
/// killed (and the test fails) if it passes 1 GiB RSS or runs for 2 minutes.
fn pull_in_child(reference: &str, config: &RegistryConfig) -> ChildRun {
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zlayer-image-pull"))
        .args(["--root", root.path().to_str().unwrap(), "--memory-report"])
        .args(["--registry-config", &serde_json::to_string(config).unwrap()])
        .arg(reference)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let rss = rss_kib(pid);
        if rss > 1 << 20 || started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pull child grew to {rss} KiB RSS / ran {:?}: the body is not capped",
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no memory report in {stdout:?} (stderr {stderr})"));
    let hwm_growth_kib =
        report["vmhwm_end_kib"].as_u64().unwrap() - report["vmhwm_start_kib"].as_u64().unwrap();
    ChildRun {
        success: status.success(),
        stderr,
        hwm_growth_kib,
        elapsed: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_manifest_is_cut_at_the_cap_with_flat_memory() {
    let reg = BadRegistry::start().await;
    reg.route("/manifests/", Answer::Endless { status: 200 });
    let reference = format!("{}/bad/endless:v1", reg.host());
    let run = tokio::task::spawn_blocking(move || pull_in_child(&reference, &quick_config(5, 0)))
        .await
        .unwrap();
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("manifest is larger than the 4194304 bytes allowed; stopped reading"),
        "{}",
        run.stderr
    );
    assert!(
        run.hwm_growth_kib < 32 << 10,
        "peak RSS grew by {} KiB reading a capped manifest",
        run.hwm_growth_kib
    );
    let sent = reg.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "{sent} bytes were sent before the client hung up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_declared_manifest_is_refused_unread() {
    let reg = BadRegistry::start().await;
    reg.route("/manifests/", Answer::Declared(100_000_000_000));
    let reference = format!("{}/bad/huge:v1", reg.host());
    let run = tokio::task::spawn_blocking(move || pull_in_child(&reference, &quick_config(5, 0)))
        .await
        .unwrap();
    assert!(!run.success);
    assert!(
        run.stderr.contains(
            "manifest is 100000000000 bytes (Content-Length), larger than the 4194304 allowed; not read"
        ),
        "{}",
        run.stderr
    );
    assert!(run.hwm_growth_kib < 32 << 10, "{} KiB", run.hwm_growth_kib);
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripping_manifest_hits_the_document_timeout() {
    let reg = BadRegistry::start().await;
    // One byte every 100 ms: never stalls long enough for the progress timeout.
    reg.route(
        "/manifests/",
        Answer::Drip {
            len: 1 << 20,
            every: Duration::from_millis(100),
        },
    );
    let root = tempfile::tempdir().unwrap();
    let mut cfg = quick_config(5, 0);
    cfg.document_timeout_secs = 2;
    let started = Instant::now();
    let (r, _) = pull_collect(
        root.path(),
        cfg,
        &format!("{}/bad/drip:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("the manifest did not arrive within 2 s (document timeout"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_token_error_and_config_bodies_are_capped() {
    let reg = BadRegistry::start().await;
    // Token endpoint with an endless answer.
    reg.route("/v2/bad/token/", Answer::Challenge);
    reg.route("/token", Answer::Endless { status: 200 });
    // An error status with an endless body.
    reg.route("/v2/bad/error/", Answer::Endless { status: 404 });
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (r, _) = pull_collect(
        root.path(),
        quick_config(5, 0),
        &format!("{}/bad/token:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("token response is larger than the 1048576 bytes allowed"),
        "{err}"
    );
    let (r, _) = pull_collect(
        root.path(),
        quick_config(5, 0),
        &format!("{}/bad/error:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("not found") && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(
        err.len() < 2000,
        "error detail not truncated: {} chars",
        err.len()
    );

    // An endless config blob (a valid manifest names it with its real size).
    let (layer, diff_id) = small_layer();
    reg.honest_image("bad/config", "v1", layer, &diff_id);
    reg.route_first("/blobs/", Answer::Endless { status: 200 });
    let (r, _) = pull_collect(
        root.path(),
        quick_config(5, 0),
        &format!("{}/bad/config:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("registry sent more bytes than the manifest declares"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_blob_fails_on_the_progress_timeout() {
    let reg = BadRegistry::start().await;
    let (layer, diff_id) = small_layer();
    let half = layer.len() / 2;
    let layer_digest = reg.honest_image("bad/stall", "v1", layer.clone(), &diff_id);
    reg.route_first(
        &format!("/blobs/{layer_digest}"),
        Answer::Stall {
            body: layer,
            send: half,
        },
    );
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (r, _) = pull_collect(
        root.path(),
        quick_config(1, 2),
        &format!("{}/bad/stall:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("no data for 1 s (progress timeout, registry setting progress_timeout_secs)"),
        "{err}"
    );
    assert!(err.contains(&layer_digest.to_string()), "{err}");
    // 3 attempts of ~1 s each plus short backoff; the old code waited 60 s per attempt.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_fails_on_the_header_timeout() {
    let reg = BadRegistry::start().await;
    reg.route("/manifests/", Answer::NoHeaders);
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (r, _) = pull_collect(
        root.path(),
        quick_config(1, 1),
        &format!("{}/bad/silent:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("no response headers for 1 s (progress timeout"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_retry_budget_is_spent() {
    let reg = BadRegistry::start().await;
    reg.route("/manifests/", Answer::NoHeaders);
    let root = tempfile::tempdir().unwrap();
    let mut cfg = quick_config(1, 1000);
    cfg.retry_budget_secs = 3;
    let started = Instant::now();
    let (r, _) = pull_collect(
        root.path(),
        cfg,
        &format!("{}/bad/budget:v1", reg.host()),
        &amd64(),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(
        err.contains("the retry budget of 3 s is spent, registry setting retry_budget_secs"),
        "{err}"
    );
    assert!(err.contains("no response headers for 1 s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

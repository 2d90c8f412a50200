//! Registries and images that never end: endless or lying bodies are cut at their cap with
//! flat memory, stalls and silent servers fail on the progress timeout, retries stop at their
//! budget, a small layer of zeros cannot fill the disk under the store. Against a misbehaving
//! registry of the test's own (`common::bad_registry`), on loopback.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bad_registry::{Answer, BadRegistry};
use common::*;
use zlayer_image::pull::{pull, PullError, PullOptions, PulledImage};
use zlayer_image::registry::{Platform, RegistryClient, RegistryConfig};
use zlayer_image::{Digest, ImageStore, Reference};

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

/// A gzip layer holding one file `zeros` of `size` zero bytes (about 1 MB per GiB), streamed:
/// never in memory. Returns (layer, diff id).
fn zeros_layer(size: u64) -> (Vec<u8>, Digest) {
    use sha2::Digest as _;
    /// Hashes the tar on its way into the compressor (the DiffID).
    struct Tee<W: std::io::Write>(W, sha2::Sha256);
    impl<W: std::io::Write> std::io::Write for Tee<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = self.0.write(b)?;
            self.1.update(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(Tee(gz, sha2::Sha256::new()));
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "zeros", std::io::repeat(0).take(size))
        .unwrap();
    let Tee(gz, hasher) = tar.into_inner().unwrap();
    let diff_id = Digest::parse(&format!("sha256:{}", hex::encode(hasher.finalize()))).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// A tmpfs of limited size on a fresh directory, unmounted (and the directory removed) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Option<Tmpfs> {
        if !zlayer_testkit::prereq::require_root() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size_mib}m").as_str()),
        )
        .expect("mount tmpfs");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

async fn pull_with(
    root: &std::path::Path,
    reference: &str,
    opts: &PullOptions,
) -> Result<PulledImage, PullError> {
    let client = RegistryClient::new(quick_config(5, 0)).unwrap();
    pull(
        &ImageStore::open(root).unwrap(),
        &client,
        &Reference::parse(reference).unwrap(),
        &amd64(),
        opts,
        |_| {},
    )
    .await
}

/// Names of what is left under `root/snapshots` besides committed snapshots.
fn leftover_snapshot_dirs(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root.join("snapshots"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_of_zeros_stops_at_the_free_space_floor() {
    let Some(fs) = Tmpfs::mount(96) else {
        return;
    };
    let reg = BadRegistry::start().await;
    let (layer, diff_id) = tokio::task::spawn_blocking(|| zeros_layer(1 << 30))
        .await
        .unwrap();
    assert!(layer.len() < 4 << 20, "{} bytes", layer.len());
    let layer_digest = reg.honest_image("bomb/zeros", "v1", layer, &diff_id);
    let reference = format!("{}/bomb/zeros:v1", reg.host());
    let opts = PullOptions {
        min_free_bytes: 32 << 20,
        ..PullOptions::default()
    };
    let err = pull_with(fs.path(), &reference, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&reference), "{err}");
    assert!(err.contains(&layer_digest.to_string()), "{err}");
    assert!(err.contains("\"zeros\""), "{err}");
    assert!(
        err.contains("unpacking 1073741824 more bytes would leave"),
        "{err}"
    );
    assert!(
        err.contains(
            "below the free-space floor of 33554432 bytes (daemon setting min_free_space_mib)"
        ),
        "{err}"
    );
    assert!(leftover_snapshot_dirs(fs.path()).is_empty());
    let st = nix::sys::statvfs::statvfs(fs.path()).unwrap();
    #[allow(clippy::unnecessary_cast)] // 32-bit on 32-bit targets
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    assert!(free >= 32 << 20, "only {free} bytes left free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_unpacked_size_cap_is_enforced() {
    let reg = BadRegistry::start().await;
    let (layer, diff_id) = tokio::task::spawn_blocking(|| zeros_layer(96 << 20))
        .await
        .unwrap();
    let layer_digest = reg.honest_image("bomb/capped", "v1", layer, &diff_id);
    let reference = format!("{}/bomb/capped:v1", reg.host());
    let root = tempfile::tempdir().unwrap();
    let opts = PullOptions {
        max_unpacked_bytes: Some(32 << 20),
        ..PullOptions::default()
    };
    let err = pull_with(root.path(), &reference, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&layer_digest.to_string()), "{err}");
    assert!(
        err.contains("over the limit of 33554432 bytes (daemon setting max_image_unpacked_mib)"),
        "{err}"
    );
    assert!(leftover_snapshot_dirs(root.path()).is_empty());

    // Within the cap the same image pulls.
    let opts = PullOptions {
        max_unpacked_bytes: Some(128 << 20),
        ..PullOptions::default()
    };
    let root = tempfile::tempdir().unwrap();
    let img = pull_with(root.path(), &reference, &opts).await.unwrap();
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].snapshot.size, 96 << 20);
}

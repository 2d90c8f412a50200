//! `zlayer-image-pull`: pulls one image into a root directory with the library's pull
//! pipeline, outside the daemon. Used by the crash (SIGKILL) and memory tests, which need
//! the pull in a process of its own, and by `bench/pull.sh`.
//!
//! Usage: zlayer-image-pull --root DIR [--platform OS/ARCH[/VARIANT]] [--concurrency N]
//!        [--events] [--memory-report] [--registry-config JSON] REFERENCE
//!
//! `--events` prints every progress event as a JSON line on stdout; `--memory-report` prints
//! a final JSON line `{"vmhwm_start_kib":..,"vmhwm_end_kib":..,"vmrss_end_kib":..}` (also
//! when the pull failed); `--registry-config` takes a `RegistryConfig` as JSON (timeouts,
//! retries) for tests.

use std::path::PathBuf;
use std::process::ExitCode;

use zlayer_image::pull::{pull, PullOptions};
use zlayer_image::registry::{Platform, RegistryClient, RegistryConfig};
use zlayer_image::{ImageStore, Reference};

struct Args {
    root: PathBuf,
    platform: Option<String>,
    concurrency: Option<usize>,
    events: bool,
    memory_report: bool,
    registry_config: RegistryConfig,
    reference: String,
}

fn parse_args() -> Result<Args, String> {
    let mut root = None;
    let mut platform = None;
    let mut concurrency = None;
    let mut events = false;
    let mut memory_report = false;
    let mut registry_config = RegistryConfig::default();
    let mut reference = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => root = it.next().map(PathBuf::from),
            "--platform" => platform = it.next(),
            "--concurrency" => {
                let v = it.next().ok_or("--concurrency needs a value")?;
                concurrency = Some(v.parse().map_err(|_| format!("bad --concurrency {v:?}"))?);
            }
            "--events" => events = true,
            "--memory-report" => memory_report = true,
            "--registry-config" => {
                let v = it.next().ok_or("--registry-config needs a JSON value")?;
                registry_config =
                    serde_json::from_str(&v).map_err(|e| format!("bad --registry-config: {e}"))?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s => reference = Some(s.to_string()),
        }
    }
    Ok(Args {
        root: root.ok_or("--root DIR is required")?,
        platform,
        concurrency,
        events,
        memory_report,
        registry_config,
        reference: reference.ok_or("an image reference is required")?,
    })
}

/// Reads a `kB` field of /proc/self/status (VmHWM: peak RSS, VmRSS: current RSS).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("zlayer-image-pull: {e}");
            eprintln!("usage: zlayer-image-pull --root DIR [--platform OS/ARCH] [--concurrency N] [--events] [--memory-report] [--registry-config JSON] REFERENCE");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zlayer-image-pull: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let reference = Reference::parse(&args.reference)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    std::fs::create_dir_all(&args.root)?;
    let store = ImageStore::open(&args.root)?;
    let client = RegistryClient::new(args.registry_config.clone())?;
    let opts = PullOptions {
        max_concurrent_downloads: args.concurrency,
        ..PullOptions::default()
    };
    let vmhwm_start = status_kib("VmHWM");
    let events = args.events;
    let result = runtime.block_on(pull(
        &store,
        &client,
        &reference,
        &platform,
        &opts,
        move |e| {
            if events {
                if let Ok(line) = serde_json::to_string(&e) {
                    println!("{line}");
                }
            }
        },
    ));
    if args.memory_report {
        println!(
            "{}",
            serde_json::json!({
                "vmhwm_start_kib": vmhwm_start,
                "vmhwm_end_kib": status_kib("VmHWM"),
                "vmrss_end_kib": status_kib("VmRSS"),
            })
        );
    }
    let pulled = result?;
    eprintln!(
        "pulled {} ({}, {} layers)",
        pulled.reference,
        pulled.manifest_digest,
        pulled.layers.len()
    );
    Ok(())
}

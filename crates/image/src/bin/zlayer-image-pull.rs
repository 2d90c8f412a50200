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

#[cfg(unix)]
use std::path::PathBuf;
#[cfg(unix)]
use std::process::ExitCode;

#[cfg(unix)]
use zlayer_image::pull::{pull, PullOptions};
#[cfg(unix)]
use zlayer_image::registry::{Platform, RegistryClient, RegistryConfig};
#[cfg(unix)]
use zlayer_image::{ImageStore, Reference};

/// The pull pipeline (content store, snapshots) needs Unix.
#[cfg(not(unix))]
fn main() {
    eprintln!("zlayer-image-pull: only supported on Unix");
    std::process::exit(2);
}

/// What is wrong with the command line.
#[cfg(unix)]
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    /// A fixed complaint: a missing value or a required argument.
    #[error("{0}")]
    Missing(&'static str),
    #[error("bad --concurrency {0:?}")]
    BadConcurrency(String),
    #[error("bad --registry-config: {0}")]
    BadRegistryConfig(#[source] serde_json::Error),
    #[error("unknown option {0:?}")]
    UnknownOption(String),
}

#[cfg(unix)]
struct Args {
    root: PathBuf,
    platform: Option<String>,
    concurrency: Option<usize>,
    events: bool,
    memory_report: bool,
    registry_config: RegistryConfig,
    reference: String,
}

#[cfg(unix)]
fn parse_args() -> Result<Args, ArgsError> {
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
                let v = it
                    .next()
                    .ok_or(ArgsError::Missing("--concurrency needs a value"))?;
                concurrency = Some(v.parse().map_err(|_| ArgsError::BadConcurrency(v))?);
            }
            "--events" => events = true,
            "--memory-report" => memory_report = true,
            "--registry-config" => {
                let v = it
                    .next()
                    .ok_or(ArgsError::Missing("--registry-config needs a JSON value"))?;
                registry_config = serde_json::from_str(&v).map_err(ArgsError::BadRegistryConfig)?;
            }
            s if s.starts_with('-') => return Err(ArgsError::UnknownOption(s.to_string())),
            s => reference = Some(s.to_string()),
        }
    }
    Ok(Args {
        root: root.ok_or(ArgsError::Missing("--root DIR is required"))?,
        platform,
        concurrency,
        events,
        memory_report,
        registry_config,
        reference: reference.ok_or(ArgsError::Missing("an image reference is required"))?,
    })
}

#[cfg(unix)]
/// Reads a `kB` field of /proc/self/status (VmHWM: peak RSS, VmRSS: current RSS).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(unix)]
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

#[cfg(unix)]
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

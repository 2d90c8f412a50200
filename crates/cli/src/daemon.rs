//! `zlayer-agent daemon`: opens the agent's state and serves the API until SIGTERM/SIGINT.
//! Containers are not stopped when the daemon stops: each has its own shim.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use zlayer_agent::config::{FileConfig, DEFAULT_CONFIG_FILE};
use zlayer_agent::paths::{DEFAULT_ROOT, DEFAULT_STATE};
use zlayer_agent::{Agent, AgentConfig, Paths};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Persistent data: images, snapshots, containers, volumes, agent.db.
    #[arg(long, env = "ZLAYER_AGENT_ROOT", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Runtime state: libcontainer state and shim sockets.
    #[arg(long, env = "ZLAYER_AGENT_STATE", default_value = DEFAULT_STATE)]
    state: PathBuf,
    /// The daemon's JSON config file (registries, credentials); missing default file = defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) on this TCP address, e.g. 127.0.0.1:9100.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

pub fn run(args: DaemonArgs, socket: PathBuf) -> anyhow::Result<()> {
    limit_malloc_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ZLAYER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // With ZLAYER_LOG=debug, the steps of a container's life (create, mount, bundle,
        // shim start, wait, remove) log their durations: where a `run` spends its time.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    raise_nofile_limit();
    if !args.root.is_absolute() || !args.state.is_absolute() {
        bail!("--root and --state must be absolute paths");
    }
    let file = match &args.config {
        Some(path) => FileConfig::load(path, true)?,
        None => FileConfig::load(std::path::Path::new(DEFAULT_CONFIG_FILE), false)?,
    };
    let paths = Paths::new(&args.root, &args.state);
    std::fs::create_dir_all(&paths.root)
        .with_context(|| format!("creating {}", paths.root.display()))?;
    let _lock = lock_root(&paths)?;
    paths
        .create_all()
        .with_context(|| format!("creating {}", args.root.display()))?;
    let exe = std::env::current_exe().context("locating the zlayer-agent executable")?;
    let config = AgentConfig {
        paths,
        file,
        shim_command: vec![exe, PathBuf::from("shim")],
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("zlayer-agent")
        .build()
        .context("starting the daemon runtime")?;
    rt.block_on(async move {
        let agent = Arc::new(Agent::open(config)?);
        agent.recover().await?;
        if let Some(addr) = args.metrics_addr {
            let agent = agent.clone();
            tokio::spawn(async move {
                if let Err(e) = zlayer_api::routes::services::serve_metrics(addr, agent).await {
                    tracing::error!("metrics listener: {e:#}");
                }
            });
        }
        zlayer_api::server::serve_unix(&socket, agent.clone(), shutdown_signal()).await?;
        // Removed containers' directories still being unmounted and deleted.
        agent
            .finish_purges(std::time::Duration::from_secs(10))
            .await;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("daemon stopped; containers keep running under their shims");
        Ok(())
    })
}

/// Caps glibc's malloc at two arenas. By default it creates up to 8 per core, one for each
/// thread that allocates while the others hold theirs, and every arena keeps its own free pages:
/// with 100 replicas running that was 17 MB of anonymous RSS against 11 MB with two arenas
/// (bench/deploy.sh, same binary, `MALLOC_ARENA_MAX`). The daemon's allocations are small and
/// few, so two arenas (one per tokio worker on a 2-core node) cost no measurable contention.
/// Called before any thread exists; set in-process (not via the environment) so the shims and
/// containers the daemon starts keep glibc's defaults.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; it is called while the process is
    // still single-threaded. A failure (returns 0) just leaves the default in place.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// Through this variable the daemon hands its shims the descriptor limit it was started with,
/// which [`restore_inherited_nofile`] puts back.
const INHERITED_NOFILE_ENV: &str = "ZLAYER_AGENT_INHERITED_NOFILE";

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Every connection a container opens to
/// the daemon's DNS servers and published ports costs a descriptor; those listeners are capped
/// to a share of this limit (`zlayer_network::listen::FdBudget`), and a soft limit of 1024 (a
/// common default) would leave little room. Called while the process is still
/// single-threaded (it sets an environment variable).
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot read RLIMIT_NOFILE: {e}");
            return;
        }
    };
    // Containers keep the limit the daemon was given, as with docker: programs that loop over
    // every possible descriptor, or size tables by the limit, would suffer from a huge one.
    std::env::set_var(INHERITED_NOFILE_ENV, soft.to_string());
    if soft >= hard {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => tracing::info!("descriptor limit (RLIMIT_NOFILE) raised from {soft} to {hard}"),
        Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE from {soft} to {hard}: {e}"),
    }
}

/// In a shim: lowers the soft `RLIMIT_NOFILE` back to what the daemon was started with (see
/// [`raise_nofile_limit`]), so the container inherits that. Runs before any thread exists.
pub fn restore_inherited_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Some(wanted) = std::env::var(INHERITED_NOFILE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    std::env::remove_var(INHERITED_NOFILE_ENV);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if wanted < soft {
            // Lowering the soft limit always succeeds; nothing to report if it did not.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard);
        }
    }
}

/// Holds an exclusive lock on `root/daemon.lock` for the daemon's lifetime, so two daemons
/// never share one root.
fn lock_root(paths: &Paths) -> anyhow::Result<std::fs::File> {
    let path = paths.daemon_lock();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own and keep open for the daemon's lifetime.
    let rc = unsafe { libc_flock(file.as_raw_fd()) };
    if rc != 0 {
        bail!(
            "another zlayer-agent daemon is already using {} (lock {} is held)",
            paths.root.display(),
            path.display()
        );
    }
    Ok(file)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: the daemon's single-instance lock.
///
/// # Safety
/// `fd` must be an open file descriptor the caller owns for as long as the lock is wanted.
unsafe fn libc_flock(fd: i32) -> i32 {
    // SAFETY: the caller guarantees `fd` is an open descriptor it owns; flock(2) only takes
    // a lock on it and touches no memory of ours.
    unsafe { nix::libc::flock(fd, nix::libc::LOCK_EX | nix::libc::LOCK_NB) }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

//! The per-container shim process (`zlayer-agent shim ...`).
//!
//! Why a process per container: libcontainer changes the caller's working directory,
//! makes it non-dumpable and clones children running Rust code without fork handlers,
//! none of which is safe in the multi-threaded daemon. The shim is single-threaded (no
//! tokio), so it can call libcontainer freely.
//!
//! Life cycle:
//! 1. The process the daemon started forks the real shim and waits for one report line
//!    on a pipe, prints it on stdout and exits (0 = started). The daemon thus never has
//!    to reap the long-lived shim, and learns the start error (with its message).
//! 2. The real shim: new session (`setsid`), child subreaper, stdio on /dev/null and
//!    `shim.log`; binds `<state>/shims/<id>.sock`; creates and starts the container with
//!    pipes for its stdio; reports; then serves its socket and copies output into the
//!    CRI log until the container's init exits.
//! 3. At the end: OOM check, cgroup teardown (kills leftovers, removes the cgroup:
//!    [`crate::cgroups::teardown`]) and libcontainer's state removed, exit record renamed
//!    into place, waiters answered, socket removed, record fsynced, exit. The rootfs stays mounted: unmounting and deleting the container
//!    directory is the caller's `rm` (see [`crate::rootfs::remove`]).
//!
//! If anything fails before the container runs, everything the shim created is removed
//! (cgroup, libcontainer state, socket) before it reports the error.

/// Writes a diagnostic line to the shim's stderr (`shim.log` in the container directory).
/// Never `eprintln!` in the shim: it panics when the write fails, and a full disk must not end
/// the shim (leaving its container orphaned, unsupervised and without an exit record).
macro_rules! shim_log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

// Layers, each using only those before it in this list:
// args (command line, socket path, report line), error (describing failures)
//   -> seccomp_bpf, executor (what runs in the container's process)
//   -> exec, start (creating processes)
//   -> server (the event loop)
//   -> this module, which hands the started container from `start` to `server`.
mod args;
pub(crate) mod error;
pub use error::error_chain;
mod exec;
pub(crate) mod executor;
pub(crate) mod seccomp_bpf;
mod server;
mod start;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

pub use args::{socket_path, ArgsError, ShimArgs, StartReport, START_GATE_FD};

/// Entry point of `zlayer-agent shim ARGS...`; returns the process exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let args = match ShimArgs::parse(&args) {
        Ok(a) => a,
        Err(e) => {
            shim_log!("zlayer-agent shim: {e}");
            return 2;
        }
    };
    // Descriptors the spawner leaked to us (without CLOEXEC) must not be held for the
    // container's lifetime: a daemon's pipe would never see EOF. The start gate is kept, and
    // marked close-on-exec so that the container's process never inherits it.
    let first_leaked = if args.start_gate {
        START_GATE_FD + 1
    } else {
        START_GATE_FD
    };
    // SAFETY: close_range and fcntl only act on descriptors; nothing in this process uses
    // any descriptor above 2 at this point except the gate.
    unsafe {
        libc::syscall(libc::SYS_close_range, first_leaked as u32, u32::MAX, 0u32);
        if args.start_gate && libc::fcntl(START_GATE_FD, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            shim_log!("zlayer-agent shim: --start-gate given but descriptor 3 is not open");
            return 2;
        }
    }
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            shim_log!("zlayer-agent shim: pipe: {e}");
            return 2;
        }
    };
    // SAFETY: the shim is single-threaded at this point (nothing has spawned threads:
    // the CLI only parsed arguments), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            shim_log!("zlayer-agent shim: fork: {e}");
            2
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            if args.start_gate {
                // SAFETY: closing our copy of the gate; only the forked shim reads it.
                unsafe { libc::close(START_GATE_FD) };
            }
            relay_report(r)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let code = match start::run(args, w) {
                Some(started) => server::Server::new(started).run(),
                None => 1,
            };
            // Leave without running the spawner's atexit handlers or flushing its stdio.
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The spawner-facing half: copy the report to stdout; exit 0 when the container started.
fn relay_report(r: OwnedFd) -> i32 {
    let mut f = std::fs::File::from(r);
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let report: StartReport = match serde_json::from_str(s.trim()) {
        Ok(r) => r,
        Err(_) => StartReport {
            ok: false,
            pid: None,
            shim_pid: None,
            started_at: None,
            error: Some(format!(
                "the shim exited before reporting (see shim.log in the container directory){}",
                if s.is_empty() {
                    String::new()
                } else {
                    format!(": {s}")
                }
            )),
            exit_code: None,
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&crate::protocol::line(&report));
    let _ = out.flush();
    let _ = f.as_raw_fd();
    if report.ok {
        0
    } else {
        1
    }
}

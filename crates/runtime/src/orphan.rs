//! Acting on a container without its shim.
//!
//! The shim is the container's supervisor, but it can die (SIGKILL, a crash) or stop answering
//! (SIGSTOP, a hang). The daemon must still be able to stop what the container runs and to
//! clean up after it. Everything a container runs lives in its cgroup, so the cgroup is the
//! handle: signal its members, wait until it is empty, remove it in every hierarchy.
//! Blocking code; call it from the blocking pool.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::exit::{read_exit_record, write_exit_record, ExitRecord};

/// The container's `linux.cgroupsPath` as its bundle's config.json says (`None`: no bundle,
/// e.g. a create that failed before writing it).
pub fn cgroups_path(container_dir: &Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(container_dir.join("config.json")).ok()?;
    let p = spec.linux().as_ref()?.cgroups_path().clone()?;
    Some(p.to_string_lossy().into_owned())
}

/// Every process in the cgroup, over all hierarchies (on v1 a process could have been moved
/// out of the container's cgroup in some hierarchies only).
pub fn members(cgroups_path: &str) -> Vec<i32> {
    let v2 = crate::cgroups::is_v2();
    let mounts = if v2 {
        String::new()
    } else {
        fs::read_to_string("/proc/self/mounts").unwrap_or_default()
    };
    let mut pids = BTreeSet::new();
    for dir in crate::cgroups::teardown::cgroup_dirs(&mounts, v2, cgroups_path) {
        collect_members(&dir, &mut pids);
    }
    pids.into_iter().collect()
}

fn collect_members(dir: &Path, pids: &mut BTreeSet<i32>) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(
            procs
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .filter(|p| *p > 0),
        );
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_members(&e.path(), pids);
            }
        }
    }
}

/// Sends `signal` to the container without its shim: to `init` alone when it is given and
/// still a member of the cgroup (what `kill` without `--all` means), else to every member.
/// Returns how many processes were signalled.
pub fn signal(cgroups_path: &str, signal: i32, init: Option<i32>) -> usize {
    let pids = members(cgroups_path);
    let targets: Vec<i32> = match init {
        Some(p) if pids.contains(&p) => vec![p],
        _ => pids,
    };
    for pid in &targets {
        // SAFETY: kill(2) with a pid read from the container's cgroup and a plain signal number.
        unsafe { libc::kill(*pid, signal) };
    }
    targets.len()
}

/// Polls until no process is left in the cgroup; false if some still are after `timeout`.
pub fn wait_empty(cgroups_path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if members(cgroups_path).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Why a container could not be stopped or cleaned up without its shim.
#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    /// Processes of the cgroup were still there after SIGKILL and [`KILL_WAIT`].
    #[error("processes {pids:?} of cgroup {cgroups_path} survived SIGKILL")]
    Survivors {
        cgroups_path: String,
        pids: Vec<i32>,
    },
    #[error(transparent)]
    Teardown(#[from] crate::cgroups::teardown::TeardownError),
}

fn survivors(cgroups_path: &str) -> OrphanError {
    OrphanError::Survivors {
        cgroups_path: cgroups_path.to_string(),
        pids: members(cgroups_path),
    }
}

/// `stop` without the shim: `stop_signal` to init (or every member), `grace` to end, then
/// SIGKILL to every member. Returns the exit as far as it can be known (the processes are not
/// our children, so their real status is the shim's to collect): 128 + the signal that ended
/// them. Errors when processes survive SIGKILL.
pub fn stop(
    cgroups_path: &str,
    stop_signal: i32,
    init: Option<i32>,
    grace: Duration,
) -> Result<i32, OrphanError> {
    signal(cgroups_path, stop_signal, init);
    if wait_empty(cgroups_path, grace) {
        return Ok(128 + stop_signal);
    }
    signal(cgroups_path, libc::SIGKILL, None);
    if wait_empty(cgroups_path, KILL_WAIT) {
        return Ok(128 + libc::SIGKILL);
    }
    Err(survivors(cgroups_path))
}

/// How long SIGKILLed members may take to leave their cgroup (exit_mm of a large process,
/// a loaded machine).
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Kills every process of the cgroup and removes its directory in every hierarchy (v1: all
/// controllers; v2: the one path). Errors name what stayed.
pub fn kill_and_remove(cgroups_path: &str) -> Result<(), OrphanError> {
    signal(cgroups_path, libc::SIGKILL, None);
    if !wait_empty(cgroups_path, KILL_WAIT) {
        return Err(survivors(cgroups_path));
    }
    Ok(crate::cgroups::teardown::remove(cgroups_path)?)
}

/// Why a shim is gone, for the exit record.
pub const SHIM_LOST: &str = "shim lost";

/// Cleans up after a shim that died without writing an exit record: kills what the container
/// still runs, removes its cgroup in every hierarchy, the shim's socket and libcontainer
/// state, and writes a truthful exit record (137, `shim lost: <why>`) so that every later
/// reader (status, wait, logs) sees the end. If the shim did write a record after all, that
/// one is returned untouched.
pub fn reap_lost_shim(
    container_dir: &Path,
    state_dir: &Path,
    id: &str,
    why: &str,
) -> (ExitRecord, Result<(), OrphanError>) {
    if let Ok(Some(rec)) = read_exit_record(container_dir) {
        return (rec, Ok(()));
    }
    let cleaned = match cgroups_path(container_dir) {
        Some(p) => kill_and_remove(&p),
        None => Ok(()),
    };
    let _ = fs::remove_file(crate::shim::socket_path(state_dir, id));
    let _ = fs::remove_dir_all(state_dir.join("runtime").join(id));
    let rec = ExitRecord {
        exit_code: 128 + libc::SIGKILL,
        signal: Some(libc::SIGKILL),
        oom_killed: false,
        pid: None,
        started_at: None,
        finished_at: Utc::now(),
        error: Some(format!("{SHIM_LOST}: {why}")),
    };
    if container_dir.exists() {
        // Best effort: the daemon's database holds the exit too.
        let _ = write_exit_record(container_dir, &rec);
    }
    (rec, cleaned)
}

/// A pidfd of a shim: a handle on that very process (never a later one reusing its pid), which
/// becomes readable when it exits. Hand-written because neither nix 0.29 nor std (stable)
/// offer `pidfd_open` for a process that is not our child.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// Opens a pidfd for `pid`; ESRCH when it no longer exists.
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Sends `signal` to the process (never to a process that reused its pid).
    pub fn send_signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(2) on a descriptor we own, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// True once the process has exited (a non-blocking poll of the descriptor).
    pub fn has_exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & libc::POLLIN != 0
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_follows_a_child_until_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = Pidfd::open(child.id() as i32).unwrap();
        assert!(!fd.has_exited());
        fd.send_signal(libc::SIGKILL).unwrap();
        child.wait().unwrap();
        assert!(fd.has_exited());
        assert!(Pidfd::open(0).is_err());
    }

    #[test]
    fn no_bundle_means_no_cgroup() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(cgroups_path(d.path()), None);
    }

    #[test]
    fn errors_name_the_cgroup_and_what_stayed() {
        let e = OrphanError::Survivors {
            cgroups_path: "/zlayer-agent/c1".into(),
            pids: vec![41, 42],
        };
        assert_eq!(
            e.to_string(),
            "processes [41, 42] of cgroup /zlayer-agent/c1 survived SIGKILL"
        );
        let e = OrphanError::from(crate::cgroups::teardown::TeardownError::Remove {
            dir: "/sys/fs/cgroup/zlayer-agent/c1".into(),
            source: std::io::Error::from_raw_os_error(libc::EBUSY),
        });
        assert!(
            e.to_string()
                .starts_with("removing cgroup /sys/fs/cgroup/zlayer-agent/c1: "),
            "{e}"
        );
    }
}

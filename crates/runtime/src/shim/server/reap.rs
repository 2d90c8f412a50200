//! Reaping: the container's init, exec processes, and strays the shim inherits as
//! child subreaper.

use std::time::Instant;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::Server;
use crate::exit::ExitRecord;

/// Our direct children, from /proc (the `children` files of every thread).
///
/// An empty `children` file is an answer ("no children"), not a reason to look elsewhere:
/// the full scan of every process's `stat` below costs tens of milliseconds on a busy host
/// and ran on every loop of a shim whose container had exited. It is only for kernels
/// built without CONFIG_PROC_CHILDREN, where the file does not exist.
fn child_pids() -> Vec<i32> {
    let me = std::process::id();
    let mut v = Vec::new();
    let mut have_children_files = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                have_children_files = true;
                v.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if have_children_files {
        return v;
    }
    // Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) {
                // ppid is the 2nd field after the parenthesised command name
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u32>().ok())
                        == Some(me)
                    {
                        v.push(pid);
                    }
                }
            }
        }
    }
    v
}

fn wait_status(ws: WaitStatus) -> Option<(i32, Option<i32>)> {
    match ws {
        WaitStatus::Exited(_, c) => Some(ExitRecord::from_status(Some(c), None)),
        WaitStatus::Signaled(_, s, _) => Some(ExitRecord::from_status(None, Some(s as i32))),
        _ => None,
    }
}

impl Server {
    /// waitpid on exactly the pids we own: init, exec processes, inherited orphans.
    pub(super) fn reap(&mut self) {
        self.reap_strays();
        if self.init_status.is_none() {
            if let Ok(ws) = waitpid(self.init_pid, Some(WaitPidFlag::WNOHANG)) {
                if let Some(st) = wait_status(ws) {
                    self.init_status = Some(st);
                    self.init_exited_at = Some(Instant::now());
                }
            }
        }
        for e in self.execs.values_mut() {
            if e.status.is_none() {
                match waitpid(e.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(ws) => {
                        if let Some(st) = wait_status(ws) {
                            e.status = Some(st);
                            e.exited_at = Some(Instant::now());
                        }
                    }
                    Err(nix::errno::Errno::ECHILD) => {
                        // Not ours (should not happen): do not wait forever.
                        e.status = Some((255, None));
                        e.exited_at = Some(Instant::now());
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Reaps children we do not track: as child subreaper the shim inherits the
    /// processes a failed libcontainer exec leaves behind (its intermediate process and
    /// the half-started process, which lives in the container's pid namespace: until it
    /// is reaped the container's init cannot finish exiting). Each is waited for by its
    /// own pid, never with waitpid(-1), and only here, never while libcontainer runs.
    fn reap_strays(&mut self) {
        for pid in child_pids() {
            let tracked =
                pid == self.init_pid.as_raw() || self.execs.values().any(|e| e.pid.as_raw() == pid);
            if !tracked {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

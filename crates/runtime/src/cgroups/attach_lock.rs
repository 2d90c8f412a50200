//! Warming the kernel's cgroup attach lock ahead of a container start.
//!
//! Why: every container start moves a process into the container's new cgroup by writing its
//! pid to `cgroup.procs` (libcontainer's intermediate process does it, on v1 and v2 alike).
//! That write takes the kernel's global `cgroup_threadgroup_rwsem` for writing, and taking a
//! per-cpu rwsem for writing after it has been idle waits for a full RCU grace period:
//! 8-10 ms on the 2-core build machine, a quarter of a whole `run --rm IMAGE true`. Once
//! taken, the rwsem stays in its writer-ready state for about one more grace period, during
//! which further writes cost ~0.1 ms (measured: 8 ms after 100 ms idle, 0.2 ms within 20 ms).
//!
//! So the daemon, as soon as a start (or exec) is requested, writes its own pid into the
//! cgroup it is already in, on a blocking thread. That moves nothing (the kernel skips a
//! task whose cgroup does not change) but starts the grace period while the daemon mounts
//! the rootfs, writes the bundle and spawns the shim, so that libcontainer's write finds the
//! lock ready. Failures are ignored: it is only a head start, never needed for correctness.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::CGROUP_ROOT;

/// The `cgroup.procs` file of the cgroup this process is in, in one hierarchy: the unified one
/// on v2, else a v1 hierarchy (pids preferred: it has no attach side effects at all).
/// `proc_cgroup` is the text of /proc/self/cgroup, `mounts` of /proc/self/mounts.
pub fn own_procs_file(proc_cgroup: &str, mounts: &str, v2: bool) -> Option<PathBuf> {
    let entries: Vec<(&str, &str)> = proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            Some((f.next()?, f.next()?))
        })
        .collect();
    if v2 {
        let (_, path) = entries.iter().find(|(ctrls, _)| ctrls.is_empty())?;
        return Some(join_cgroup(Path::new(CGROUP_ROOT), path).join("cgroup.procs"));
    }
    let v1 = |want: Option<&str>| {
        entries.iter().find_map(|(ctrls, path)| {
            let ctrl = ctrls.split(',').find(|c| {
                !c.is_empty() && !c.starts_with("name=") && want.is_none_or(|w| w == *c)
            })?;
            let mount = super::v1_mountpoint_in(mounts, ctrl)?;
            Some(join_cgroup(&mount, path).join("cgroup.procs"))
        })
    };
    v1(Some("pids")).or_else(|| v1(None))
}

fn join_cgroup(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

/// Writes this process's pid into its own cgroup (see the module doc). Blocks for up to one
/// RCU grace period: call it on a thread that may wait.
pub fn warm() {
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    let v2 = super::is_v2();
    let mounts = if v2 {
        String::new()
    } else {
        fs::read_to_string("/proc/self/mounts").unwrap_or_default()
    };
    let Some(file) = own_procs_file(&own, &mounts, v2) else {
        return;
    };
    if let Ok(mut f) = fs::OpenOptions::new().write(true).open(&file) {
        let _ = f.write_all(std::process::id().to_string().as_bytes());
    }
}

/// [`warm`] on tokio's blocking pool, not awaited. At most one at a time: a start that comes
/// while one is under way shares its grace period (100 replicas started at once would
/// otherwise hold 100 blocking threads, each waiting for the same grace period).
pub fn warm_in_background() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARMING: AtomicBool = AtomicBool::new(false);
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if WARMING.swap(true, Ordering::AcqRel) {
        return;
    }
    handle.spawn_blocking(|| {
        warm();
        WARMING.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid 0 0\n\
        cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
        cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n\
        cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n";

    #[test]
    fn v1_prefers_pids_and_keeps_the_own_path() {
        let own = "9:name=systemd:/\n8:pids:/user.slice\n4:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            own_procs_file(own, MOUNTS, false),
            Some(PathBuf::from("/sys/fs/cgroup/pids/user.slice/cgroup.procs"))
        );
    }

    #[test]
    fn v1_without_pids_takes_another_controller_never_a_named_hierarchy() {
        let own = "9:name=systemd:/x\n4:cpu,cpuacct:/svc\n0::/\n";
        let mounts = MOUNTS.replace("cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n", "");
        assert_eq!(
            own_procs_file(own, &mounts, false),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/svc/cgroup.procs"))
        );
        assert_eq!(own_procs_file("9:name=systemd:/x\n", MOUNTS, false), None);
    }

    /// On the real host: the file is found, and writing to it (as root) moves nothing.
    #[test]
    fn warming_finds_the_own_cgroup_and_moves_nothing() {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let file = own_procs_file(&own, &mounts, super::super::is_v2())
            .expect("this process's cgroup.procs file");
        assert!(file.is_file(), "{} does not exist", file.display());
        warm();
        assert_eq!(fs::read_to_string("/proc/self/cgroup").unwrap(), own);
    }

    #[test]
    fn v2_uses_the_unified_line() {
        assert_eq!(
            own_procs_file("0::/system.slice/zlayer.service\n", "", true),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/zlayer.service/cgroup.procs"
            ))
        );
        assert_eq!(own_procs_file("garbage", "", true), None);
    }
}

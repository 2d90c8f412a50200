//! Removing a container's cgroup once its init has exited: the shim's last step before it
//! writes the exit record.
//!
//! Why not libcontainer's `Container::delete`: it builds a libcgroups manager first, which
//! looks up the mount point of each of the twelve v1 controllers through a fresh procfs
//! handle and a parse of /proc/self/mountinfo apiece, about 2 ms of every container's exit
//! path, for what is a few `rmdir`s. Our bundles carry no hooks, so delete's only other work
//! (poststop hooks) does not apply; the libcontainer state directory is removed by the shim.
//! libcontainer still creates the cgroups, and still deletes them when a start fails.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a container's cgroup could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// The hierarchies (v1) could not be listed.
    #[error("reading /proc/self/mounts: {0}")]
    Mounts(#[source] io::Error),
    /// A directory stayed (busy, or not removable); the first of them.
    #[error("removing cgroup {}: {source}", dir.display())]
    Remove {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The directories of the cgroup `cgroups_path` (e.g. `/zlayer-agent/<id>`): the unified one
/// on v2, else one per v1 hierarchy in `mounts` (the text of /proc/self/mounts), named ones
/// (`name=systemd`) included, and the cgroup2 tree of a hybrid host too (something may have
/// created the path there). Hierarchies that combine controllers (`cpu,cpuacct`) are listed
/// once.
pub fn cgroup_dirs(mounts: &str, v2: bool, cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        // Never the root of a hierarchy.
        return Vec::new();
    }
    if v2 {
        return vec![Path::new(super::CGROUP_ROOT).join(rel)];
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    let hybrid_v2 = mounts.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 3 && f[2] == "cgroup2").then(|| f[1])
    });
    for mount in super::v1_hierarchies(mounts)
        .map(|(mount, _)| mount)
        .chain(hybrid_v2)
    {
        let d = Path::new(mount).join(rel);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// SIGKILLs what is left in the cgroup and removes its directories (children first).
/// A directory that does not exist is fine; one that stays busy is an error naming it.
pub fn remove(cgroups_path: &str) -> Result<(), TeardownError> {
    let v2 = super::is_v2();
    let mounts = if v2 {
        String::new()
    } else {
        fs::read_to_string("/proc/self/mounts").map_err(TeardownError::Mounts)?
    };
    let mut first_err = None;
    for dir in cgroup_dirs(&mounts, v2, cgroups_path) {
        if let Err(e) = remove_tree(&dir) {
            first_err.get_or_insert(TeardownError::Remove {
                dir: dir.clone(),
                source: e,
            });
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    kill_members(dir);
    rmdir_with_retry(dir)
}

fn kill_members(dir: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid > 0 {
            // SAFETY: kill(2) with a pid read from the cgroup and a constant signal.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// `rmdir` fails with EBUSY while killed members are still exiting: retry with a short
/// backoff (1, 2, 4 ... ms, about half a second in all) before giving up.
fn rmdir_with_retry(dir: &Path) -> io::Result<()> {
    let mut delay = Duration::from_millis(1);
    let mut last = None;
    for _ in 0..10 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        kill_members(dir);
        std::thread::sleep(delay);
        delay *= 2;
    }
    Err(last.unwrap_or_else(|| io::Error::other("could not remove")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_dirs_one_per_hierarchy() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
            cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
            cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
            cgroup /sys/fs/cgroup/systemd cgroup rw,name=systemd 0 0\n";
        assert_eq!(
            cgroup_dirs(mounts, false, "/zlayer-agent/abc"),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/zlayer-agent/abc"),
                PathBuf::from("/sys/fs/cgroup/memory/zlayer-agent/abc"),
                PathBuf::from("/sys/fs/cgroup/systemd/zlayer-agent/abc"),
                PathBuf::from("/sys/fs/cgroup/unified/zlayer-agent/abc"),
            ]
        );
    }

    #[test]
    fn v2_dir_and_never_a_root() {
        assert_eq!(
            cgroup_dirs("", true, "/zlayer-agent/abc"),
            vec![PathBuf::from("/sys/fs/cgroup/zlayer-agent/abc")]
        );
        assert!(cgroup_dirs(
            "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0",
            false,
            "/"
        )
        .is_empty());
        assert!(cgroup_dirs("", true, "").is_empty());
    }

    #[test]
    fn removes_a_plain_directory_tree_and_accepts_a_missing_one() {
        // On a plain filesystem rmdir behaves as on cgroupfs for empty directories.
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("c");
        fs::create_dir_all(top.join("child/grandchild")).unwrap();
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
    }
}

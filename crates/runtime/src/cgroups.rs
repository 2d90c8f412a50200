//! Locating a container's own cgroup on cgroup v1 and v2, and reading the few files
//! the runtime needs from it (OOM kills, usage). libcgroups owns creation and removal;
//! this module only reads, so it works from the daemon too (no libcontainer call).

use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// True when /sys/fs/cgroup is a unified (v2) hierarchy.
pub fn is_v2() -> bool {
    match nix::sys::statfs::statfs(CGROUP_ROOT) {
        Ok(s) => s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC,
        Err(_) => false,
    }
}

/// Mount point of the v1 hierarchy carrying `controller` (e.g. `memory`, `cpuacct`).
pub fn v1_mountpoint(controller: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller) {
            return Some(PathBuf::from(f[1]));
        }
    }
    None
}

/// A container's cgroup, given its `cgroupsPath` (absolute, e.g. `/zlayer-agent/<id>`).
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    rel: PathBuf,
    v2: bool,
}

impl ContainerCgroup {
    pub fn new(cgroups_path: &str) -> Self {
        ContainerCgroup {
            rel: PathBuf::from(cgroups_path.trim_start_matches('/')),
            v2: is_v2(),
        }
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// Directory holding `controller`'s files for this cgroup.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        if self.v2 {
            Some(Path::new(CGROUP_ROOT).join(&self.rel))
        } else {
            v1_mountpoint(controller).map(|m| m.join(&self.rel))
        }
    }

    /// Reads a file of `controller`'s directory, trimmed.
    pub fn read(&self, controller: &str, file: &str) -> Option<String> {
        let p = self.dir(controller)?.join(file);
        fs::read_to_string(p).ok().map(|s| s.trim().to_string())
    }

    /// Number of OOM kills recorded in this cgroup (v2 `memory.events`, v1 `memory.oom_control`).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read("memory", file)
            .map(|t| keyed_value(&t, "oom_kill").unwrap_or(0))
            .unwrap_or(0)
    }

    /// Whether the cgroup directory exists (memory controller, or the unified dir).
    pub fn exists(&self) -> bool {
        self.dir("memory").is_some_and(|d| d.exists())
    }
}

/// Value of `key` in a `key value` per line file (memory.stat, cpu.stat, memory.events).
pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(t, "oom_kill"), Some(3));
        assert_eq!(keyed_value(t, "missing"), None);
    }
}

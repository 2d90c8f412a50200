//! Locating a container's own cgroup on cgroup v1 and v2, reading the few files the
//! runtime needs from it (OOM kills, usage), and checking before a start that the
//! controllers a resource limit needs exist. libcgroups creates the cgroups (inside
//! libcontainer, in the shim); the shim removes them after the exit ([`teardown`]).
//! Nothing here calls libcontainer, so the reading parts work from the daemon too.
//! [`attach_lock`] gives a start a head start on the kernel's cgroup attach lock.
//!
//! v1 or v2 is decided exactly as libcgroups decides it, so both agree: `/sys/fs/cgroup`
//! being a cgroup2 filesystem means v2 ("unified"); a tmpfs there (legacy or hybrid, even
//! with a cgroup2 mount at `/sys/fs/cgroup/unified`) means v1, and containers then get
//! v1 cgroups only.

pub mod attach_lock;
pub mod freezer;
pub mod teardown;

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
    v1_mountpoint_in(&mounts, controller)
}

/// [`v1_mountpoint`] over the text of a mounts table.
pub fn v1_mountpoint_in(mounts: &str, controller: &str) -> Option<PathBuf> {
    v1_hierarchies(mounts)
        .find(|(_, options)| options.split(',').any(|o| o == controller))
        .map(|(mount, _)| PathBuf::from(mount))
}

/// The v1 hierarchies of a mounts table: (mount point, mount options).
fn v1_hierarchies(mounts: &str) -> impl Iterator<Item = (&str, &str)> {
    mounts.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup").then(|| (f[1], f[3]))
    })
}

/// Controllers a child of the v2 root can use: the root's `cgroup.controllers`
/// (controllers bound to a v1 hierarchy on a hybrid host are missing there).
pub fn v2_root_controllers() -> Vec<String> {
    fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A run option that needs a cgroup controller (`--memory` needs `memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerNeed {
    pub controller: &'static str,
    pub option: &'static str,
}

/// A resource limit was asked for but the host lacks the controller that enforces it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{option} needs the cgroup {version} \"{controller}\" controller, which this host does \
     not provide ({source_desc}; available: {available})"
)]
pub struct MissingController {
    pub option: String,
    pub controller: String,
    /// `v1` or `v2`.
    pub version: String,
    /// Where availability was read from (e.g. `/sys/fs/cgroup/cgroup.controllers`).
    pub source_desc: String,
    pub available: String,
}

/// The first of `needs` whose controller is not in `available` (pure; see
/// [`Controllers::check`]).
pub fn first_missing<'a>(
    needs: &'a [ControllerNeed],
    available: &[String],
) -> Option<&'a ControllerNeed> {
    needs
        .iter()
        .find(|n| !available.iter().any(|a| a == n.controller))
}

/// The cgroup controllers this host offers a container, as far as a start needs to know:
/// read by [`Controllers::read`], judged by the pure [`Controllers::check`].
///
/// Why we check ourselves: on v2 libcgroups enables whatever the root offers and then
/// writes e.g. `memory.max` into the new cgroup; without the controller that file does not
/// exist and the start fails deep inside libcontainer with "failed to open .../memory.max:
/// No such file or directory", after the rootfs and the shim were already set up. Checking
/// first gives an error that names the option and the controller, and nothing is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controllers {
    /// Controller names (on v1: those of the asked-for ones that have a hierarchy).
    pub available: Vec<String>,
    /// `v1` or `v2`.
    pub version: &'static str,
    /// Where availability was read from, for the error message.
    pub source_desc: String,
}

impl Controllers {
    /// Reads which of the controllers `needs` asks for exist (v2: the root's
    /// `cgroup.controllers`; v1: the hierarchies in /proc/self/mounts).
    pub fn read(needs: &[ControllerNeed]) -> Controllers {
        if is_v2() {
            Controllers {
                available: v2_root_controllers(),
                version: "v2",
                source_desc: format!("{CGROUP_ROOT}/cgroup.controllers"),
            }
        } else {
            let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            Controllers {
                available: needs
                    .iter()
                    .filter(|n| v1_mountpoint_in(&mounts, n.controller).is_some())
                    .map(|n| n.controller.to_string())
                    .collect(),
                version: "v1",
                source_desc: "no v1 hierarchy with it in /proc/self/mounts".to_string(),
            }
        }
    }

    /// The first of `needs` this host lacks, as an error naming option and controller.
    pub fn check(&self, needs: &[ControllerNeed]) -> Result<(), MissingController> {
        match first_missing(needs, &self.available) {
            None => Ok(()),
            Some(n) => Err(MissingController {
                option: n.option.to_string(),
                controller: n.controller.to_string(),
                version: self.version.to_string(),
                source_desc: self.source_desc.clone(),
                available: if self.available.is_empty() {
                    "none".to_string()
                } else {
                    self.available.join(" ")
                },
            }),
        }
    }
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

    /// The `cgroupsPath` this was made from (absolute).
    pub fn cgroups_path(&self) -> String {
        format!("/{}", self.rel.display())
    }

    /// Directory holding `controller`'s files for this cgroup (on v2 the one unified
    /// directory, whatever the controller).
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
    /// 0 when the memory controller is not enabled for it (no limit, so no cgroup OOM).
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

    /// Whether the cgroup directory exists (v1: of the memory controller, or of cpuacct
    /// when memory is not mounted; v2: the unified directory).
    pub fn exists(&self) -> bool {
        if self.v2 {
            return self.dir("").is_some_and(|d| d.is_dir());
        }
        ["memory", "cpuacct", "pids"]
            .iter()
            .find_map(|c| self.dir(c))
            .is_some_and(|d| d.is_dir())
    }

    /// Number of tasks (threads) in this v2 cgroup and its descendants: what `pids.current`
    /// counts, for hosts where the pids controller is not enabled (`cgroup.threads` is a
    /// core file, present without any controller).
    pub fn v2_task_count(&self) -> Option<u64> {
        self.dir("").map(|d| count_threads(&d))
    }
}

fn count_threads(dir: &Path) -> u64 {
    let own = fs::read_to_string(dir.join("cgroup.threads"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0);
    let children: u64 = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| count_threads(&e.path()))
                .sum()
        })
        .unwrap_or(0);
    own + children
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

/// A limit file's value: `None` for unlimited (v2 `max`, v1's page-aligned `i64::MAX`)
/// and for text that is not a number.
pub fn parse_limit(text: &str) -> Option<u64> {
    let v = text.trim();
    if v == "max" {
        return None;
    }
    let n: u64 = v.parse().ok()?;
    (n < (i64::MAX as u64) & !0xfff).then_some(n)
}

/// v2 `cpu.max` (`"<quota|max> <period>"`) as a number of CPUs; `None` when unlimited
/// or malformed.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: u64 = it.next()?.parse().ok()?;
    if quota == "max" || period == 0 || it.next().is_some() {
        return None;
    }
    Some(quota.parse::<u64>().ok()? as f64 / period as f64)
}

/// v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` as a number of CPUs; `None` when the
/// quota is -1 (unlimited) or a value is malformed.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Option<f64> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: u64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(t, "oom_kill"), Some(3));
        assert_eq!(keyed_value(t, "missing"), None);
        // v2 memory.events: `oom` must not match `oom_kill` and vice versa
        let ev = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(ev, "oom_kill"), Some(1));
        assert_eq!(keyed_value(ev, "oom"), Some(2));
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712"), None);
        assert_eq!(parse_limit("16777216\n"), Some(16777216));
        assert_eq!(parse_limit("20"), Some(20));
        assert_eq!(parse_limit("garbage"), None);
    }

    #[test]
    fn cpu_max_and_cfs() {
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2.0));
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("50000"), None);
        assert_eq!(parse_cpu_max("50000 0"), None);
        assert_eq!(parse_cpu_max("x 100000"), None);
        assert_eq!(parse_cfs_quota("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_cfs_quota("-1", "100000"), None);
    }

    #[test]
    fn missing_controller_is_found() {
        let need = [
            ControllerNeed {
                controller: "cpu",
                option: "--cpus",
            },
            ControllerNeed {
                controller: "memory",
                option: "--memory",
            },
        ];
        let hybrid: Vec<String> = vec!["hugetlb".into()];
        assert_eq!(first_missing(&need, &hybrid), Some(&need[0]));
        let full: Vec<String> = "cpuset cpu io memory hugetlb pids rdma misc"
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(first_missing(&need, &full), None);
        let no_mem: Vec<String> = vec!["cpu".into(), "pids".into()];
        assert_eq!(first_missing(&need, &no_mem), Some(&need[1]));
        // "cpuset" must not count as "cpu"
        assert_eq!(
            first_missing(&need[..1], &["cpuset".to_string()]),
            Some(&need[0])
        );
    }

    #[test]
    fn missing_controller_message_names_option_and_controller() {
        let e = MissingController {
            option: "--memory".into(),
            controller: "memory".into(),
            version: "v2".into(),
            source_desc: "/sys/fs/cgroup/cgroup.controllers".into(),
            available: "hugetlb".into(),
        };
        let m = e.to_string();
        assert!(
            m.starts_with("--memory needs the cgroup v2 \"memory\" controller"),
            "{m}"
        );
        assert!(
            m.contains("/sys/fs/cgroup/cgroup.controllers; available: hugetlb"),
            "{m}"
        );
    }

    #[test]
    fn v1_mountpoints_from_mounts_text() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs ro,nosuid 0 0\n\
            cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec 0 0\n\
            cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n\
            cgroup /sys/fs/cgroup/cpuset cgroup rw,nosuid,cpuset 0 0\n\
            cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,memory 0 0\n";
        assert_eq!(
            v1_mountpoint_in(mounts, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            v1_mountpoint_in(mounts, "cpuacct"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            v1_mountpoint_in(mounts, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(v1_mountpoint_in(mounts, "pids"), None);
    }

    #[test]
    fn v2_threads_counted_recursively() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("cgroup.threads"), "10\n11\n12\n").unwrap();
        fs::create_dir(d.path().join("child")).unwrap();
        fs::write(d.path().join("child/cgroup.threads"), "13\n").unwrap();
        assert_eq!(count_threads(d.path()), 4);
    }
}

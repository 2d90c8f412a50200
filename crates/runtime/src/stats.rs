//! Resource usage of a container, read from its own cgroup (v1 or v2), for `stats`.
//! Reading needs no libcontainer call, so the daemon can do it directly.
//!
//! The figures are computed by pure functions over a "read this file" callback
//! ([`stats_v1`], [`stats_v2`]) so they can be unit-tested against fixture text; only
//! [`read_stats`] touches /sys/fs/cgroup.

use serde::{Deserialize, Serialize};

use crate::cgroups::{keyed_value, parse_cfs_quota, parse_cpu_max, parse_limit, ContainerCgroup};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerStats {
    /// Total CPU time consumed, in nanoseconds (compute a percentage from two samples).
    pub cpu_usage_ns: u64,
    /// CPU limit in CPUs (`--cpus`); `None` when unlimited.
    #[serde(default)]
    pub cpu_limit: Option<f64>,
    /// Memory in use, excluding the inactive page cache (what docker shows).
    pub memory_usage: u64,
    /// Memory limit in bytes; `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub pids_current: u64,
    /// `None` when unlimited.
    pub pids_limit: Option<u64>,
    /// Figures the host could not give because a controller is not enabled for the
    /// container's cgroup (`"memory"`, `"pids"`, `"cpu"`); their fields above are 0/None
    /// and must be shown as unknown, not as zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

impl ContainerStats {
    /// Whether the figures of `what` (`"memory"`, `"pids"`, `"cpu"`) were read.
    pub fn has(&self, what: &str) -> bool {
        !self.unavailable.iter().any(|u| u == what)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path} of the container not found (not running?)")]
pub struct StatsError {
    pub path: String,
}

fn num(v: Option<String>) -> Option<u64> {
    v?.trim().parse().ok()
}

/// Stats of a v2 cgroup; `read(file)` returns the content of a file of its directory.
///
/// `cpu.stat` is a core file (present without the cpu controller). `memory.*` exist only
/// when the memory controller is enabled for the cgroup, `pids.*` only with pids; when
/// `pids.current` is missing the caller may count tasks itself (see [`read_stats`]).
pub fn stats_v2(read: &dyn Fn(&str) -> Option<String>) -> ContainerStats {
    let mut s = ContainerStats::default();
    match read("cpu.stat").and_then(|t| keyed_value(&t, "usage_usec")) {
        Some(us) => s.cpu_usage_ns = us.saturating_mul(1000),
        None => s.unavailable.push("cpu".into()),
    }
    s.cpu_limit = read("cpu.max").and_then(|t| parse_cpu_max(&t));
    match num(read("memory.current")) {
        Some(current) => {
            let inactive = read("memory.stat")
                .and_then(|t| keyed_value(&t, "inactive_file"))
                .unwrap_or(0);
            s.memory_usage = current.saturating_sub(inactive);
            s.memory_limit = read("memory.max").and_then(|t| parse_limit(&t));
        }
        None => s.unavailable.push("memory".into()),
    }
    match num(read("pids.current")) {
        Some(n) => {
            s.pids_current = n;
            s.pids_limit = read("pids.max").and_then(|t| parse_limit(&t));
        }
        None => s.unavailable.push("pids".into()),
    }
    s
}

/// Stats of a v1 cgroup; `read(controller, file)` returns the content of a file of that
/// controller's directory for the container.
pub fn stats_v1(read: &dyn Fn(&str, &str) -> Option<String>) -> ContainerStats {
    let mut s = ContainerStats::default();
    match num(read("cpuacct", "cpuacct.usage")) {
        Some(ns) => s.cpu_usage_ns = ns,
        None => s.unavailable.push("cpu".into()),
    }
    if let (Some(q), Some(p)) = (
        read("cpu", "cpu.cfs_quota_us"),
        read("cpu", "cpu.cfs_period_us"),
    ) {
        s.cpu_limit = parse_cfs_quota(&q, &p);
    }
    match num(read("memory", "memory.usage_in_bytes")) {
        Some(usage) => {
            let inactive = read("memory", "memory.stat")
                .and_then(|t| keyed_value(&t, "total_inactive_file"))
                .unwrap_or(0);
            s.memory_usage = usage.saturating_sub(inactive);
            s.memory_limit = read("memory", "memory.limit_in_bytes").and_then(|t| parse_limit(&t));
        }
        None => s.unavailable.push("memory".into()),
    }
    match num(read("pids", "pids.current")) {
        Some(n) => {
            s.pids_current = n;
            s.pids_limit = read("pids", "pids.max").and_then(|t| parse_limit(&t));
        }
        None => s.unavailable.push("pids".into()),
    }
    s
}

/// Reads the stats of the cgroup at `cgroups_path` (the spec's `linux.cgroupsPath`).
pub fn read_stats(cgroups_path: &str) -> Result<ContainerStats, StatsError> {
    let cg = ContainerCgroup::new(cgroups_path);
    if !cg.exists() {
        return Err(StatsError {
            path: cgroups_path.to_string(),
        });
    }
    if cg.is_v2() {
        let mut s = stats_v2(&|f| cg.read("", f));
        // Without the pids controller, count the tasks ourselves: the same number
        // pids.current would show (threads of the cgroup and its descendants).
        if !s.has("pids") {
            if let Some(n) = cg.v2_task_count() {
                s.pids_current = n;
                s.unavailable.retain(|u| u != "pids");
            }
        }
        Ok(s)
    } else {
        Ok(stats_v1(&|c, f| cg.read(c, f)))
    }
}

/// Stats of the container whose bundle is in `container_dir` (reads the cgroupsPath
/// from its config.json), for callers that do not keep the path themselves.
pub fn read_container_stats(container_dir: &std::path::Path) -> Result<ContainerStats, StatsError> {
    let config = container_dir.join("config.json");
    let path = oci_spec::runtime::Spec::load(&config)
        .ok()
        .and_then(|s| s.linux().as_ref()?.cgroups_path().clone())
        .ok_or_else(|| StatsError {
            path: format!("(no linux.cgroupsPath in {})", config.display()),
        })?;
    read_stats(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // Fixture text as the kernel writes it (6.x, trailing newlines kept).
    const V2_CPU_STAT: &str = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n\
        core_sched.force_idle_usec 0\nnr_periods 10\nnr_throttled 2\nthrottled_usec 5000\n\
        nr_bursts 0\nburst_usec 0\n";
    const V2_MEMORY_STAT: &str = "anon 4096000\nfile 2048000\nkernel 300000\n\
        active_anon 4000000\ninactive_anon 96000\nactive_file 1048000\ninactive_file 1000000\n";

    fn v2(files: &[(&str, &str)]) -> ContainerStats {
        let m: HashMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        stats_v2(&|f| m.get(f).cloned())
    }

    #[test]
    fn v2_all_controllers() {
        let s = v2(&[
            ("cpu.stat", V2_CPU_STAT),
            ("cpu.max", "50000 100000\n"),
            ("memory.current", "7000000\n"),
            ("memory.max", "67108864\n"),
            ("memory.stat", V2_MEMORY_STAT),
            ("pids.current", "3\n"),
            ("pids.max", "50\n"),
        ]);
        assert_eq!(
            s,
            ContainerStats {
                cpu_usage_ns: 123_456_000,
                cpu_limit: Some(0.5),
                memory_usage: 6_000_000,
                memory_limit: Some(64 << 20),
                pids_current: 3,
                pids_limit: Some(50),
                unavailable: vec![],
            }
        );
    }

    #[test]
    fn v2_unlimited_is_none() {
        let s = v2(&[
            ("cpu.stat", V2_CPU_STAT),
            ("cpu.max", "max 100000\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("pids.current", "1\n"),
            ("pids.max", "max\n"),
        ]);
        assert_eq!(s.cpu_limit, None);
        assert_eq!(s.memory_limit, None);
        assert_eq!(s.pids_limit, None);
        assert_eq!(s.memory_usage, 4096, "no memory.stat: nothing subtracted");
        assert!(s.unavailable.is_empty());
    }

    #[test]
    fn v2_without_memory_and_pids_controllers() {
        // A cgroup whose parent enables no controller: only core files.
        let s = v2(&[("cpu.stat", "usage_usec 42\nuser_usec 40\nsystem_usec 2\n")]);
        assert_eq!(s.cpu_usage_ns, 42_000);
        assert_eq!(s.unavailable, vec!["memory", "pids"]);
        assert!(!s.has("memory") && s.has("cpu"));
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["unavailable"], serde_json::json!(["memory", "pids"]));
    }

    #[test]
    fn v1_figures() {
        let m: HashMap<(&str, &str), &str> = [
            (("cpuacct", "cpuacct.usage"), "987654321\n"),
            (("cpu", "cpu.cfs_quota_us"), "150000\n"),
            (("cpu", "cpu.cfs_period_us"), "100000\n"),
            (("memory", "memory.usage_in_bytes"), "10000000\n"),
            (
                ("memory", "memory.stat"),
                "cache 100\ninactive_file 5\ntotal_inactive_file 2000000\n",
            ),
            (("memory", "memory.limit_in_bytes"), "9223372036854771712\n"),
            (("pids", "pids.current"), "4\n"),
            (("pids", "pids.max"), "max\n"),
        ]
        .into_iter()
        .collect();
        let s = stats_v1(&|c, f| m.get(&(c, f)).map(|v| v.to_string()));
        assert_eq!(s.cpu_usage_ns, 987_654_321);
        assert_eq!(s.cpu_limit, Some(1.5));
        assert_eq!(s.memory_usage, 8_000_000);
        assert_eq!(s.memory_limit, None);
        assert_eq!((s.pids_current, s.pids_limit), (4, None));
        assert!(s.unavailable.is_empty());
    }

    #[test]
    fn old_json_without_new_fields_still_parses() {
        let j = r#"{"cpu_usage_ns":1,"memory_usage":2,"memory_limit":null,"pids_current":3,"pids_limit":null}"#;
        let s: ContainerStats = serde_json::from_str(j).unwrap();
        assert_eq!(
            (s.cpu_usage_ns, s.cpu_limit, s.unavailable.len()),
            (1, None, 0)
        );
    }
}

//! Resource usage of a container, read from its own cgroup (v1 or v2), for `stats`.
//! Reading needs no libcontainer call, so the daemon can do it directly.

use serde::{Deserialize, Serialize};

use crate::cgroups::{keyed_value, ContainerCgroup};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Total CPU time consumed, in nanoseconds (compute a percentage from two samples).
    pub cpu_usage_ns: u64,
    /// Memory in use, excluding the inactive page cache (what docker shows).
    pub memory_usage: u64,
    /// Memory limit in bytes; `None` when unlimited.
    pub memory_limit: Option<u64>,
    pub pids_current: u64,
    /// `None` when unlimited.
    pub pids_limit: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path} of the container not found (not running?)")]
pub struct StatsError {
    pub path: String,
}

fn limit(v: Option<String>) -> Option<u64> {
    let v = v?;
    if v == "max" {
        return None;
    }
    let n: u64 = v.parse().ok()?;
    // v1 reports "unlimited" as a page-aligned i64::MAX.
    (n < (i64::MAX as u64) & !0xfff).then_some(n)
}

/// Reads the stats of the cgroup at `cgroups_path` (the spec's `linux.cgroupsPath`).
pub fn read_stats(cgroups_path: &str) -> Result<ContainerStats, StatsError> {
    let cg = ContainerCgroup::new(cgroups_path);
    if !cg.exists() {
        return Err(StatsError {
            path: cgroups_path.to_string(),
        });
    }
    let num = |c: &str, f: &str| cg.read(c, f).and_then(|v| v.parse::<u64>().ok());
    let mut s = ContainerStats::default();
    if cg.is_v2() {
        s.cpu_usage_ns = cg
            .read("cpu", "cpu.stat")
            .and_then(|t| keyed_value(&t, "usage_usec"))
            .unwrap_or(0)
            * 1000;
        let current = num("memory", "memory.current").unwrap_or(0);
        let inactive = cg
            .read("memory", "memory.stat")
            .and_then(|t| keyed_value(&t, "inactive_file"))
            .unwrap_or(0);
        s.memory_usage = current.saturating_sub(inactive);
        s.memory_limit = limit(cg.read("memory", "memory.max"));
    } else {
        s.cpu_usage_ns = num("cpuacct", "cpuacct.usage").unwrap_or(0);
        let usage = num("memory", "memory.usage_in_bytes").unwrap_or(0);
        let inactive = cg
            .read("memory", "memory.stat")
            .and_then(|t| keyed_value(&t, "total_inactive_file"))
            .unwrap_or(0);
        s.memory_usage = usage.saturating_sub(inactive);
        s.memory_limit = limit(cg.read("memory", "memory.limit_in_bytes"));
    }
    s.pids_current = num("pids", "pids.current").unwrap_or(0);
    s.pids_limit = limit(cg.read("pids", "pids.max"));
    Ok(s)
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

    #[test]
    fn limits() {
        assert_eq!(limit(Some("max".into())), None);
        assert_eq!(limit(Some("9223372036854771712".into())), None);
        assert_eq!(limit(Some("16777216".into())), Some(16777216));
    }
}

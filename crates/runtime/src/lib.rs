//! zlayer-runtime: OCI bundles, the per-container shim, libcontainer calls, exec and cgroup stats.

pub mod shim;

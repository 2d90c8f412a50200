//! zlayer-runtime: OCI bundles, overlay root filesystems, the per-container shim
//! (the only process that calls libcontainer), its client, logs and cgroup stats.
//!
//! Typical flow for the daemon (see the README of this crate and `client::launch`):
//! mount the rootfs ([`rootfs`]), generate and write the bundle ([`bundle`]), spawn the
//! shim ([`client::spawn_shim`]), then talk to it with [`client::ShimClient`].

pub mod atomic;
pub mod bundle;
pub mod cgroups;
pub mod client;
pub mod device_filter;
pub mod exit;
pub mod launch;
pub mod logs;
pub mod orphan;
pub mod protocol;
pub mod rootfs;
pub mod safe_path;
pub mod shim;
pub mod spawn;
pub mod stats;

/// The oci-spec crate (with the `image` and `runtime` features) this crate's API uses.
pub use oci_spec;

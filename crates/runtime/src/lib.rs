//! zlayer-runtime: OCI bundles, overlay root filesystems, the per-container shim
//! (the only process that calls libcontainer), its client, logs and cgroup stats.
//!
//! Typical flow for the daemon: [`launch`] a container (it mounts the rootfs ([`rootfs`]),
//! generates and writes the bundle ([`generate`], [`write_bundle`]) and spawns the shim
//! ([`spawn_shim`]), undoing all of it on failure), then talk to its shim with
//! [`ShimClient`] (status, kill, wait, exec, attach). Like containerd's runtime v2, starting
//! a shim ([`spawn_shim`]), the bundle and the client of a running shim are apart.
//!
//! The surface is what the agent, the CLI and the tests use: types and functions re-exported
//! here, plus a few namespaces whose functions belong together ([`validate`] checks of user
//! input, [`cgroups`], [`logs`], [`orphan`] for containers whose shim is gone, [`rootfs`],
//! and [`shim`], whose `main` the binary runs as `zlayer-agent shim`).
//!
//! ```no_run
//! # fn main() -> Result<(), zlayer_runtime::ClientError> {
//! use std::path::{Path, PathBuf};
//! use zlayer_runtime::*;
//! # let image = zlayer_runtime::oci_spec::image::ImageConfiguration::default();
//! let options = RunOptions { cmd: vec!["true".into()], ..Default::default() };
//! let shim_cmd = vec![std::env::current_exe().unwrap().into(), "shim".into()];
//! let started = launch(&LaunchRequest {
//!     id: "c1",
//!     container_dir: Path::new("/var/lib/zlayer/containers/c1"),
//!     state_dir: Path::new("/run/zlayer"),
//!     layers: &[PathBuf::from("/var/lib/zlayer/snapshots/1")],
//!     image: &image,
//!     options: &options,
//!     shim_cmd: &shim_cmd,
//!     log_max_size: logs::DEFAULT_MAX_SIZE,
//!     log_max_files: logs::DEFAULT_MAX_FILES,
//!     start_gate: None,
//! })?;
//! let exit = started.handle.client().wait()?;
//! println!("exit code {}", exit.exit_code);
//! # Ok(()) }
//! ```

mod atomic;
mod bundle;
pub mod cgroups;
mod client;
mod device_filter;
mod exit;
mod launch;
pub mod logs;
pub mod orphan;
mod protocol;
pub mod rootfs;
mod safe_path;
pub mod shim;
mod spawn;
mod stats;

pub use bundle::validate;
pub use bundle::{
    generate, generate_with, parse_signal, write_bundle, BundleError, ContainerSpec,
    GeneratedBundle, HostFacts, ImageUsers, NetworkMode, RunOptions, Ulimit, UserError,
    VolumeMount, VolumeSource,
};
pub use client::{
    AttachSession, ClientError, ExecOutput, ExecSession, ShimClient, ShimStatus, StdinWriter,
    StreamEvent, SHIM_CALL_TIMEOUT,
};
pub use exit::{read_exit_record, ExitRecord};
pub use launch::{launch, LaunchRequest, Launched};
pub use protocol::{ExecSpec, Stream};
pub use shim::error_chain;
pub use spawn::{spawn_shim, spawn_shim_async, ShimHandle, SpawnOptions};
pub use stats::{read_container_stats, read_stats, ContainerStats, StatsError};

/// The oci-spec crate (with the `image` and `runtime` features) this crate's API uses.
pub use oci_spec;

//! What a bundle depends on besides the request: facts about the host (/proc, /sys, /dev,
//! /etc) and the image's user database. [`HostFacts::gather`] is the one place that reads
//! them; [`super::generate_with`] turns request + facts into a spec without any I/O, so
//! every rule of the spec is unit-tested with facts built by hand.
//!
//! Gathering reads only what the request needs (the device list only for `--privileged`,
//! the host's /etc/hosts only with `--network host`, ...), as the generator did when it
//! read them itself: starting a container costs no more than before.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::user::{ImageUsers, UserError};
use super::{controller_needs, devices, ContainerSpec, NetworkMode, VolumeSource};
use crate::cgroups::Controllers;

/// The host facts one container's spec depends on. Fields a request does not need hold
/// their `Default` (see [`HostFacts::gather`]).
#[derive(Debug)]
pub struct HostFacts {
    /// /sys/fs/cgroup is a cgroup v2 hierarchy: containers get a cgroup namespace and a
    /// read-only /sys/fs/cgroup.
    pub cgroup_v2: bool,
    /// The host's online CPUs (read for `--cpus`, which may not exceed them).
    pub host_cpus: usize,
    /// This process's capability bounding set (what `--privileged`/`--cap-add ALL` can give).
    pub bounding_set: u64,
    /// The memory cgroup accounts swap (read for `--memory`; without it no swap limit).
    pub swap_accounting: bool,
    /// The cgroup controllers the resource options need, as far as the host has them
    /// (read when a resource option is set; `None`: not read, nothing is checked).
    pub controllers: Option<Controllers>,
    /// The host's hostname (read for `--network host` without `--hostname`).
    pub hostname: String,
    /// The host's /etc/hosts (read for `--network host`).
    pub etc_hosts: Option<String>,
    /// The host's /etc/resolv.conf (empty when unreadable).
    pub resolv_conf: String,
    /// The host's device nodes as OCI `linux.devices` (read for `--privileged`).
    pub devices: Vec<Value>,
    /// Bind-mount sources that do not exist on the host.
    pub missing_bind_sources: Vec<PathBuf>,
    /// The image's /etc/passwd and /etc/group, or why they could not be read.
    pub image_users: Result<ImageUsers, UserError>,
}

impl Default for HostFacts {
    /// A cgroup v2 host with every capability, one CPU, nothing else known, and an image
    /// without users: a base for tests to set what they check.
    fn default() -> Self {
        HostFacts {
            cgroup_v2: true,
            host_cpus: 1,
            bounding_set: u64::MAX,
            swap_accounting: false,
            controllers: None,
            hostname: String::new(),
            etc_hosts: None,
            resolv_conf: String::new(),
            devices: Vec::new(),
            missing_bind_sources: Vec::new(),
            image_users: Ok(ImageUsers::default()),
        }
    }
}

impl HostFacts {
    /// Reads the facts `input` needs from this host and from `input.rootfs`. Never fails:
    /// an unreadable file is an empty or absent fact, as for the generator before; the
    /// image's user database keeps its read error for the generator to report in order.
    pub fn gather(input: &ContainerSpec<'_>) -> HostFacts {
        let opts = input.options;
        let cgroup_v2 = crate::cgroups::is_v2();
        let host_mode = opts.network == NetworkMode::Host;
        let needs = controller_needs(opts);
        HostFacts {
            cgroup_v2,
            host_cpus: if opts.cpus.is_some() {
                super::validate::host_cpus()
            } else {
                0
            },
            bounding_set: super::own_bounding_set(),
            swap_accounting: opts.memory.is_some() && host_swap_accounting(cgroup_v2),
            controllers: (!needs.is_empty()).then(|| Controllers::read(&needs)),
            hostname: if host_mode && opts.hostname.is_none() {
                host_hostname()
            } else {
                String::new()
            },
            etc_hosts: host_mode
                .then(|| std::fs::read_to_string("/etc/hosts").ok())
                .flatten(),
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            devices: if opts.privileged {
                devices::host_devices(Path::new("/dev"))
            } else {
                Vec::new()
            },
            missing_bind_sources: opts
                .mounts
                .iter()
                .filter_map(|m| match &m.source {
                    VolumeSource::Bind(src) if !src.exists() => Some(src.clone()),
                    _ => None,
                })
                .collect(),
            image_users: ImageUsers::read(input.rootfs),
        }
    }
}

/// Whether the host's memory cgroup accounts swap: v1 has `memory.memsw.*` files; v2 has
/// `memory.swap.max` beside `memory.max` in every non-root cgroup, unless the kernel was built or
/// booted without swap accounting (`swapaccount=0`). Without it a swap limit cannot be written
/// and the start would fail, so like docker the swap part of `--memory` is then left out.
fn host_swap_accounting(cgroup_v2: bool) -> bool {
    if cgroup_v2 {
        v2_swap_accounting(Path::new("/sys/fs/cgroup"))
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    }
}

/// The v2 answer for the hierarchy mounted at `root`: the root cgroup has no `memory.*` files,
/// so look at our own cgroup, then at the root's children, for one with `memory.max`.
pub(super) fn v2_swap_accounting(root: &Path) -> bool {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("0::")
                    .map(|p| p.trim_start_matches('/').to_string())
            })
        })
        .filter(|p| !p.is_empty())
        .map(|p| root.join(p));
    let children = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir());
    own.into_iter()
        .chain(children)
        .find(|dir| dir.join("memory.max").exists())
        .is_some_and(|dir| dir.join("memory.swap.max").exists())
}

fn host_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

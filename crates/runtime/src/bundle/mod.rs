//! OCI bundle generation: image config + run options -> `config.json` and the
//! `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` files bind-mounted into the container,
//! following docker's semantics (see the tests for each rule).

pub mod devices;
mod etc_files;
mod host;
mod options;
pub mod seccomp;
mod spec;
pub mod user;
pub mod validate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;

pub use etc_files::{hosts_file, resolv_conf};
pub use host::HostFacts;
pub use options::{NetworkMode, RunOptions, Ulimit, VolumeMount, VolumeSource};
pub use spec::{generate, generate_with};
pub use user::{resolve_user, ImageUsers, UserError};

/// PATH docker sets when the image has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
/// Every capability the kernel headers know (for `--privileged` and `--cap-add ALL`).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
const DEFAULT_SHM_SIZE: u64 = 64 << 20;
const CPU_PERIOD: u64 = 100_000;
pub const DEFAULT_CGROUP_PARENT: &str = "/zlayer-agent";

/// Names of the files in the container directory that get bind-mounted into /etc.
pub const HOSTNAME_FILE: &str = "hostname";
pub const HOSTS_FILE: &str = "hosts";
pub const RESOLV_FILE: &str = "resolv.conf";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no command specified: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    /// A `-e`/`--env-file` entry [`validate::env_entry`] (or the image's Env) refuses.
    #[error(transparent)]
    InvalidEnv(validate::InvalidOption),
    #[error("working directory {0:?} is not an absolute path")]
    RelativeWorkdir(String),
    #[error("mount target {0:?} is not an absolute path")]
    RelativeMountTarget(String),
    #[error("bind mount source {0} does not exist")]
    MissingBindSource(PathBuf),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("invalid --cpus {0}: must be a positive number")]
    InvalidCpus(f64),
    #[error("invalid --memory {0}: must be at least 6 MiB (6291456 bytes)")]
    InvalidMemory(i64),
    #[error("unknown ulimit resource {0:?}")]
    UnknownUlimit(String),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::MissingController),
    #[error("creating working directory {path} in the rootfs: {source}")]
    Workdir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating mount point {path} in the rootfs: {source}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A run option the runtime cannot honour (see [`validate`]); the message names it.
    #[error(transparent)]
    InvalidOption(validate::InvalidOption),
    #[error("generated spec is invalid: {0}")]
    Spec(String),
}

/// Input of [`generate`].
pub struct ContainerSpec<'a> {
    /// Unique container id (also the libcontainer id and the cgroup leaf).
    pub id: &'a str,
    /// The container directory: bundle, etc files, logs, upper/work dirs.
    pub container_dir: &'a Path,
    /// The mounted root filesystem (see [`crate::rootfs`]), used to resolve users.
    pub rootfs: &'a Path,
    pub image: &'a ImageConfiguration,
    pub options: &'a RunOptions,
}

/// The result of [`generate`]: the spec plus what must be written next to it.
#[derive(Debug, Clone)]
pub struct GeneratedBundle {
    pub spec: Spec,
    pub hostname: String,
    pub hosts: String,
    pub resolv_conf: String,
    /// Signal `stop` sends first: the image's StopSignal, else SIGTERM.
    pub stop_signal: i32,
    /// The resolved working directory (created by [`write_bundle`] when missing).
    pub workdir: String,
}

/// Parses a signal given as a name (`SIGTERM`, `TERM`, any case) or a number.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

fn merge_env(env: &mut Vec<String>, entry: &str) -> Result<(), BundleError> {
    let (key, _) = entry
        .split_once('=')
        .ok_or_else(|| BundleError::InvalidEnv(validate::InvalidOption::new("-e", entry)))?;
    if key.is_empty() {
        return Err(BundleError::InvalidEnv(validate::InvalidOption::new(
            "-e",
            format!("invalid environment variable {entry:?}: the name before '=' is empty"),
        )));
    }
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key) || e.as_str() == key)
    {
        Some(existing) => *existing = entry.to_string(),
        None => env.push(entry.to_string()),
    }
    Ok(())
}

fn has_env(env: &[String], key: &str) -> bool {
    env.iter()
        .any(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
}

/// Normalises a capability name (`net_admin`, `CAP_NET_ADMIN`) to `CAP_NET_ADMIN`.
fn normalize_cap(name: &str) -> Result<String, BundleError> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(BundleError::UnknownCapability(name.to_string()))
    }
}

/// The calling process's capability bounding set as a bit mask (all bits if unknown).
pub fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Docker's capability arithmetic: start from the default set (or all when privileged),
/// drop `--cap-drop` (ALL empties it), then add `--cap-add` (ALL adds every one).
///
/// "All" means every capability this process may grant: a runtime that itself runs
/// with a reduced bounding set (nested in another container) cannot hand out more.
/// `available`: the capabilities this process may grant (its bounding set, see
/// [`own_bounding_set`]).
fn effective_caps_within(opts: &RunOptions, available: u64) -> Result<Vec<String>, BundleError> {
    // ALL_CAPS is in kernel numbering order: index = capability number.
    let all_available = || {
        ALL_CAPS
            .iter()
            .enumerate()
            .filter(|(i, _)| available & (1u64 << i) != 0)
            .map(|(_, s)| s.to_string())
    };
    if opts.privileged {
        return Ok(all_available().collect());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut set: BTreeSet<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if opts.cap_drop.iter().any(is_all) {
        set.clear();
    } else {
        for c in &opts.cap_drop {
            set.remove(&normalize_cap(c)?);
        }
    }
    if opts.cap_add.iter().any(is_all) {
        set.extend(all_available());
    } else {
        for c in &opts.cap_add {
            set.insert(normalize_cap(c)?);
        }
    }
    // Keep the kernel's order so the spec is stable and readable.
    Ok(ALL_CAPS
        .iter()
        .filter(|c| set.contains(**c))
        .map(|s| s.to_string())
        .collect())
}

/// Maps docker's ulimit names to the OCI rlimit type.
pub(crate) fn rlimit_type(name: &str) -> Option<&'static str> {
    Some(match name {
        "as" => "RLIMIT_AS",
        "core" => "RLIMIT_CORE",
        "cpu" => "RLIMIT_CPU",
        "data" => "RLIMIT_DATA",
        "fsize" => "RLIMIT_FSIZE",
        "locks" => "RLIMIT_LOCKS",
        "memlock" => "RLIMIT_MEMLOCK",
        "msgqueue" => "RLIMIT_MSGQUEUE",
        "nice" => "RLIMIT_NICE",
        "nofile" => "RLIMIT_NOFILE",
        "nproc" => "RLIMIT_NPROC",
        "rss" => "RLIMIT_RSS",
        "rtprio" => "RLIMIT_RTPRIO",
        "rttime" => "RLIMIT_RTTIME",
        "sigpending" => "RLIMIT_SIGPENDING",
        "stack" => "RLIMIT_STACK",
        _ => return None,
    })
}

/// The cgroup controllers the resource options of `opts` need (checked before a start so
/// a missing one is a clear error, see [`crate::cgroups::Controllers::check`]).
pub fn controller_needs(opts: &RunOptions) -> Vec<crate::cgroups::ControllerNeed> {
    use crate::cgroups::ControllerNeed;
    let mut needs = Vec::new();
    if opts.memory.is_some() {
        needs.push(ControllerNeed {
            controller: "memory",
            option: "--memory",
        });
    }
    if opts.cpus.is_some() {
        needs.push(ControllerNeed {
            controller: "cpu",
            option: "--cpus",
        });
    }
    if opts.cpu_shares.is_some() {
        needs.push(ControllerNeed {
            controller: "cpu",
            option: "--cpu-shares",
        });
    }
    if opts.pids_limit.is_some() {
        needs.push(ControllerNeed {
            controller: "pids",
            option: "--pids-limit",
        });
    }
    needs
}

/// Writes `config.json` and the etc files into the container directory, and
/// creates the working directory inside the rootfs when missing (docker does too).
#[tracing::instrument(level = "debug", skip_all)]
pub fn write_bundle(
    container_dir: &Path,
    rootfs: &Path,
    bundle: &GeneratedBundle,
) -> Result<(), BundleError> {
    // Plain writes, no fsync: a bundle only matters to a container being created; after
    // a crash it is regenerated, so paying for durability would only slow down `run`.
    // The etc files are bind-mounted into the container, where its non-root users read them
    // (0644); config.json holds the environment, secrets included, so only root reads it.
    let w = |name: &str, data: &[u8], mode: u32| {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = container_dir.join(name);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)?;
            // A file left by an earlier start keeps its old mode through open(O_CREAT).
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.write_all(data)
        };
        write().map_err(|source| BundleError::Write {
            path: path.clone(),
            source,
        })
    };
    w(
        HOSTNAME_FILE,
        format!("{}\n", bundle.hostname).as_bytes(),
        0o644,
    )?;
    w(HOSTS_FILE, bundle.hosts.as_bytes(), 0o644)?;
    w(RESOLV_FILE, bundle.resolv_conf.as_bytes(), 0o644)?;
    let json =
        serde_json::to_vec_pretty(&bundle.spec).map_err(|e| BundleError::Spec(e.to_string()))?;
    w("config.json", &json, 0o600)?;
    // Also for --read-only: the spec's root.readonly is applied inside the container's
    // mount namespace, so the rootfs is still writable from here (docker does the same).
    crate::safe_path::mkdir_all_in_root(rootfs, Path::new(&bundle.workdir), 0o755).map_err(
        |source| BundleError::Workdir {
            path: bundle.workdir.clone(),
            source,
        },
    )?;
    // Mount points outside the runtime's fresh /dev, /proc and /sys mounts are created
    // now, while the rootfs is writable: with --read-only libcontainer cannot.
    for m in bundle.spec.mounts().iter().flatten() {
        let dest = m.destination();
        if ["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| dest.starts_with(p))
        {
            continue;
        }
        // Anything but a directory (a regular file, a socket, a FIFO, a device node) is
        // mounted on a file: a bind mount needs a mount point of the same kind.
        let is_file =
            m.typ().as_deref() == Some("bind") && m.source().as_ref().is_some_and(|s| !s.is_dir());
        let res = if is_file {
            crate::safe_path::create_file_in_root(rootfs, dest)
        } else {
            crate::safe_path::mkdir_all_in_root(rootfs, dest, 0o755)
        };
        res.map_err(|source| BundleError::MountPoint {
            path: dest.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod host_facts_tests;
#[cfg(test)]
mod tests;

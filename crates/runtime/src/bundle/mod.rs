//! OCI bundle generation: image config + run options -> `config.json` and the
//! `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` files bind-mounted into the container,
//! following docker's semantics (see the tests for each rule).

pub mod devices;
mod etc_files;
mod options;
pub mod seccomp;
pub mod user;
pub mod validate;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

pub use etc_files::{hosts_file, resolv_conf};
pub use options::{NetworkMode, RunOptions, Ulimit, VolumeMount, VolumeSource};
pub use user::{resolve_user, ResolvedUser, UserError};

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
    /// The message of [`validate::env_entry`].
    #[error("{0}")]
    InvalidEnv(String),
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
    #[error("{0}")]
    InvalidOption(String),
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
        .ok_or_else(|| BundleError::InvalidEnv(entry.to_string()))?;
    if key.is_empty() {
        return Err(BundleError::InvalidEnv(format!(
            "invalid environment variable {entry:?}: the name before '=' is empty"
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

/// Docker's capability arithmetic: start from the default set (or all when privileged),
/// drop `--cap-drop` (ALL empties it), then add `--cap-add` (ALL adds every one).
///
/// "All" means every capability this process may grant: a runtime that itself runs
/// with a reduced bounding set (nested in another container) cannot hand out more.
pub fn effective_caps(opts: &RunOptions) -> Result<Vec<String>, BundleError> {
    effective_caps_within(opts, own_bounding_set())
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
/// a missing one is a clear error, see [`crate::cgroups::check_controllers`]).
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

/// Whether the host's memory cgroup accounts swap: v1 has `memory.memsw.*` files; v2 has
/// `memory.swap.max` beside `memory.max` in every non-root cgroup, unless the kernel was built or
/// booted without swap accounting (`swapaccount=0`). Without it a swap limit cannot be written
/// and the start would fail, so like docker the swap part of `--memory` is then left out.
fn host_swap_accounting() -> bool {
    if crate::cgroups::is_v2() {
        v2_swap_accounting(Path::new("/sys/fs/cgroup"))
    } else {
        Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
    }
}

/// The v2 answer for the hierarchy mounted at `root`: the root cgroup has no `memory.*` files,
/// so look at our own cgroup, then at the root's children, for one with `memory.max`.
fn v2_swap_accounting(root: &Path) -> bool {
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

/// Builds the bundle for one container. Reads only the rootfs's /etc/passwd and /etc/group
/// and the host's /etc/resolv.conf and /etc/hosts (for the defaults); writes nothing.
#[tracing::instrument(level = "debug", skip_all)]
pub fn generate(input: &ContainerSpec<'_>) -> Result<GeneratedBundle, BundleError> {
    let opts = input.options;
    validate::run_options(opts).map_err(BundleError::InvalidOption)?;
    let img = input.image.config().clone().unwrap_or_default();

    // --- process arguments (docker: --entrypoint clears Cmd; CMD args replace Cmd) ---
    let (entrypoint, cmd): (Vec<String>, Vec<String>) = match &opts.entrypoint {
        Some(ep) => (ep.clone(), opts.cmd.clone()),
        None => (
            img.entrypoint().clone().unwrap_or_default(),
            if opts.cmd.is_empty() {
                img.cmd().clone().unwrap_or_default()
            } else {
                opts.cmd.clone()
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }

    // --- hostname ---
    let hostname = match (&opts.hostname, &opts.network) {
        (Some(h), _) => h.clone(),
        (None, NetworkMode::Host) => host_hostname(),
        (None, _) => input.id.chars().take(12).collect(),
    };

    // --- user ---
    let user_spec = opts
        .user
        .clone()
        .or_else(|| img.user().clone())
        .unwrap_or_default();
    let user = resolve_user(input.rootfs, &user_spec)?;

    // --- environment: image Env, then --env-file, then -e ---
    let mut env: Vec<String> = vec![format!("HOSTNAME={hostname}")];
    for e in img.env().clone().unwrap_or_default() {
        if e.contains('=') {
            merge_env(&mut env, &e)?;
        }
    }
    for e in opts.env_file.iter().chain(&opts.env) {
        // The user's entries are checked strictly; the image's only for an empty name
        // (images in the wild carry odd names, and docker passes them through).
        validate::env_entry(e).map_err(BundleError::InvalidEnv)?;
        merge_env(&mut env, e)?;
    }
    if !has_env(&env, "PATH") {
        env.insert(1, format!("PATH={DEFAULT_PATH}"));
    }
    if !has_env(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }

    // --- working directory ---
    let workdir = opts
        .workdir
        .clone()
        .or_else(|| img.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !workdir.starts_with('/') {
        return Err(BundleError::RelativeWorkdir(workdir));
    }

    // --- capabilities and security ---
    let caps = effective_caps(opts)?;
    let mut rlimits: Vec<Value> = Vec::new();
    for u in &opts.ulimits {
        let t = rlimit_type(&u.name).ok_or_else(|| BundleError::UnknownUlimit(u.name.clone()))?;
        rlimits.push(json!({"type": t, "soft": u.soft, "hard": u.hard}));
    }
    let process = json!({
        "terminal": false,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args,
        "env": env,
        "cwd": workdir,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": rlimits,
        "noNewPrivileges": !opts.privileged,
    });

    // --- mounts ---
    let shm = opts.shm_size.unwrap_or(DEFAULT_SHM_SIZE);
    let sys_opts: Vec<&str> = if opts.privileged {
        vec!["nosuid", "noexec", "nodev", "rw"]
    } else {
        vec!["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm}")]}),
    ];
    if crate::cgroups::is_v2() {
        // On v1 hosts containers do not get a cgroup view (docker's default there is the
        // host cgroup namespace, and libcontainer's v1 emulation mounts every hierarchy).
        mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    }
    let dir = input.container_dir;
    for (file, target) in [
        (HOSTNAME_FILE, "/etc/hostname"),
        (HOSTS_FILE, "/etc/hosts"),
        (RESOLV_FILE, "/etc/resolv.conf"),
    ] {
        mounts.push(json!({"destination": target, "type": "bind", "source": dir.join(file), "options": ["rbind", "rprivate"]}));
    }
    for m in &opts.mounts {
        if !m.target.starts_with('/') {
            return Err(BundleError::RelativeMountTarget(m.target.clone()));
        }
        let ro = if m.read_only { "ro" } else { "rw" };
        match &m.source {
            VolumeSource::Bind(src) => {
                if !src.exists() {
                    return Err(BundleError::MissingBindSource(src.clone()));
                }
                mounts.push(json!({"destination": m.target, "type": "bind", "source": src, "options": ["rbind", "rprivate", ro]}));
            }
            VolumeSource::Tmpfs { size } => {
                let mut o = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    "noexec".to_string(),
                    "mode=1777".to_string(),
                    ro.to_string(),
                ];
                if let Some(s) = size {
                    o.push(format!("size={s}"));
                }
                mounts.push(json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": o}));
            }
        }
    }

    // --- namespaces ---
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &opts.network {
        NetworkMode::None => namespaces.push(json!({"type": "network"})),
        NetworkMode::Host => {}
        NetworkMode::Netns(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    if crate::cgroups::is_v2() {
        namespaces.push(json!({"type": "cgroup"}));
    }

    // --- resources ---
    let mut resources = serde_json::Map::new();
    resources.insert(
        "devices".into(),
        if opts.privileged {
            json!([{"allow": true, "access": "rwm"}])
        } else {
            json!([{"allow": false, "access": "rwm"}])
        },
    );
    if let Some(m) = opts.memory {
        if m < 6 << 20 {
            return Err(BundleError::InvalidMemory(m));
        }
        let mut mem = json!({"limit": m});
        if host_swap_accounting() {
            let swap = match opts.memory_swap {
                Some(s) if s != 0 => s,
                _ => m.saturating_mul(2),
            };
            mem["swap"] = json!(swap);
        }
        resources.insert("memory".into(), mem);
    }
    let mut cpu = serde_json::Map::new();
    if let Some(c) = opts.cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(BundleError::InvalidCpus(c));
        }
        cpu.insert(
            "quota".into(),
            json!((c * CPU_PERIOD as f64).round() as i64),
        );
        cpu.insert("period".into(), json!(CPU_PERIOD));
    }
    if let Some(s) = opts.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = opts.pids_limit {
        resources.insert("pids".into(), json!({"limit": if p <= 0 { -1 } else { p }}));
    }
    crate::cgroups::check_controllers(&controller_needs(opts))?;

    let parent = opts
        .cgroup_parent
        .clone()
        .unwrap_or_else(|| DEFAULT_CGROUP_PARENT.to_string());
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": Value::Object(resources),
        "cgroupsPath": format!("{}/{}", parent.trim_end_matches('/'), input.id),
        "rootfsPropagation": "private",
    });
    if opts.privileged {
        linux["devices"] = Value::Array(devices::host_devices(Path::new("/dev")));
    }
    if !opts.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = serde_json::to_value(seccomp::default_profile(&caps))
            .map_err(|e| BundleError::Spec(e.to_string()))?;
    }

    let spec_json = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": input.rootfs, "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    });
    let spec: Spec =
        serde_json::from_value(spec_json).map_err(|e| BundleError::Spec(e.to_string()))?;

    let stop_signal = img
        .stop_signal()
        .as_deref()
        .and_then(parse_signal)
        .unwrap_or(libc::SIGTERM);

    let host_mode = opts.network == NetworkMode::Host;
    let hosts = hosts_file(
        &hostname,
        opts.ip_address,
        &opts.extra_hosts,
        host_mode
            .then(|| std::fs::read_to_string("/etc/hosts").ok())
            .flatten()
            .as_deref(),
    );
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = resolv_conf(&host_resolv, &opts.dns, &opts.dns_search, host_mode);

    Ok(GeneratedBundle {
        spec,
        hostname,
        hosts,
        resolv_conf: resolv,
        stop_signal,
        workdir,
    })
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
mod tests;

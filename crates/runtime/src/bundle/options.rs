//! Run options: everything `zlayer-agent run` can say about a container, already parsed.

use std::net::IpAddr;
use std::path::PathBuf;

use super::validate::InvalidOption;

/// How the container is networked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A fresh network namespace with only loopback (docker's `--network none`).
    #[default]
    None,
    /// The host's network namespace (`--network host`).
    Host,
    /// A network namespace prepared by the caller (e.g. the CNI bridge), joined by path.
    Netns(PathBuf),
}

/// Where a volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host directory or file (`-v /src:/dst`), or a named volume the caller resolved
    /// to its host directory (`-v name:/dst`).
    Bind(PathBuf),
    /// A fresh tmpfs (`--tmpfs /dst`), optionally size-limited in bytes.
    Tmpfs { size: Option<u64> },
}

/// One `-v` or `--tmpfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: VolumeSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// One `--ulimit name=soft[:hard]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// Docker's short name: `nofile`, `nproc`, `core`, `memlock`, `stack`, ...
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// Parses docker's `name=soft[:hard]` syntax (`-1` or `unlimited` for no limit).
    pub fn parse(s: &str) -> Result<Ulimit, InvalidOption> {
        let invalid =
            |why: String| InvalidOption::new("--ulimit", format!("invalid ulimit {s:?}: {why}"));
        let (name, vals) = s
            .split_once('=')
            .ok_or_else(|| invalid("expected name=soft[:hard]".into()))?;
        let num = |v: &str| -> Result<u64, InvalidOption> {
            match v {
                "-1" | "unlimited" => Ok(u64::MAX),
                _ => v
                    .parse()
                    .map_err(|_| invalid(format!("{v:?} is not a number"))),
            }
        };
        let (soft, hard) = match vals.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(vals)?, num(vals)?),
        };
        if soft > hard {
            return Err(invalid("soft limit is greater than the hard limit".into()));
        }
        if super::rlimit_type(name).is_none() {
            return Err(invalid(format!("unknown resource {name:?}")));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }
}

/// Options of `run` (and of a service's container) that shape the OCI spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--env-file` entries (already parsed: `KEY=VALUE`, see `zlayer_spec::env_file_entries`), applied before `env`.
    pub env_file: Vec<String>,
    /// `-e KEY=VALUE`, in order; later ones win.
    pub env: Vec<String>,
    /// `-u`: `name`, `uid`, `name:group`, `uid:gid`; `None` = the image's user.
    pub user: Option<String>,
    /// `-w`: absolute path; `None` = the image's WorkingDir or `/`.
    pub workdir: Option<String>,
    /// `--entrypoint`: replaces the image's Entrypoint and clears its Cmd. `Some(vec![])`
    /// (docker's `--entrypoint ""`) removes the entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Arguments after the image name: replace the image's Cmd when non-empty.
    pub cmd: Vec<String>,
    /// `--hostname`; default: the first 12 characters of the id (host mode: the host's name).
    pub hostname: Option<String>,
    /// `--memory` in bytes.
    pub memory: Option<i64>,
    /// `--memory-swap` in bytes (memory + swap), `-1` unlimited; default 2 × memory like docker.
    pub memory_swap: Option<i64>,
    /// `--cpus`: fractional CPUs, turned into a CFS quota over a 100 ms period.
    pub cpus: Option<f64>,
    /// `--cpu-shares`: relative weight (default 1024).
    pub cpu_shares: Option<u64>,
    /// `--pids-limit`; `<= 0` means unlimited.
    pub pids_limit: Option<i64>,
    pub ulimits: Vec<Ulimit>,
    pub mounts: Vec<VolumeMount>,
    /// `--read-only`: the rootfs is mounted read-only.
    pub read_only: bool,
    /// `--cap-add` / `--cap-drop`: names with or without `CAP_`, any case, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub network: NetworkMode,
    /// `--add-host name:ip`.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// The container's own address (bridge networking), written into /etc/hosts.
    pub ip_address: Option<IpAddr>,
    /// `--dns`: nameservers; default: the host's, minus loopback ones (except with host network).
    pub dns: Vec<IpAddr>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `-i`: keep the container's stdin open (the shim then owns a stdin pipe).
    pub interactive: bool,
    /// Size of /dev/shm in bytes (docker's default is 64 MiB).
    pub shm_size: Option<u64>,
    /// Parent of the container's cgroup (default `/zlayer-agent`); the container's own
    /// cgroup is `<parent>/<id>`.
    pub cgroup_parent: Option<String>,
}

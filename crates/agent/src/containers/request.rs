//! What a client asks for when it creates a container (the body of `POST /v1/containers`), and
//! its translation into the runtime's run options. Sizes are bytes: the CLI parses `64m`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zlayer_runtime::{NetworkMode, RunOptions, Ulimit, VolumeMount, VolumeSource};

use crate::error::{AgentError, Result};

/// A request to create and start a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CreateRequest {
    pub image: String,
    pub name: Option<String>,
    /// Replaces the image's Cmd when non-empty.
    pub cmd: Vec<String>,
    /// Replaces the image's Entrypoint (and clears its Cmd); `Some([])` removes it.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` (or `KEY` to take nothing: docker passes the client's value; the CLI resolves it).
    pub env: Vec<String>,
    /// Lines of `--env-file` files, already read by the client.
    pub env_file: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<i64>,
    /// `name=soft[:hard]`.
    pub ulimits: Vec<String>,
    /// `SRC:DST[:ro|rw]`: SRC absolute = bind mount, else a named volume.
    pub volumes: Vec<String>,
    /// `DST[:size=N]`.
    pub tmpfs: Vec<String>,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    /// `bridge` (default: the network `zlayer0`), a network's name, `none`, `host`, or
    /// `container:NAME` (share that container's network namespace).
    pub network: Option<String>,
    /// `-p [IP:]HOST:CTR[/tcp|/udp]`: published ports (bridge networks only).
    pub publish: Vec<String>,
    /// `--add-host name:ip`.
    pub add_hosts: Vec<String>,
    pub dns: Vec<String>,
    /// DNS search domains for a bridge container's resolv.conf (services get their deployment,
    /// so `db` finds `db.<deployment>` first).
    pub dns_search: Vec<String>,
    /// Keep stdin open (`run -i`).
    pub interactive: bool,
    /// `--rm`: remove the container once it exits.
    pub auto_remove: bool,
    /// A client stays attached and will `wait` (foreground `run`): an auto-removed container is
    /// then removed by that wait, after its output and exit were delivered, not before.
    pub attached: bool,
    pub labels: BTreeMap<String, String>,
    /// Signal for `stop` (default: the image's StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
    /// Pull policy when the image is missing: `missing` (default), `always`, `never`.
    pub pull: Option<String>,
}

/// Builds the runtime's options; named volumes are created under `volumes_dir`.
pub fn to_run_options(req: &CreateRequest, volumes_dir: &Path) -> Result<RunOptions> {
    let mut mounts = Vec::new();
    for v in &req.volumes {
        mounts.push(parse_volume(v, volumes_dir)?);
    }
    for t in &req.tmpfs {
        mounts.push(parse_tmpfs(t)?);
    }
    let mut ulimits = Vec::new();
    for u in &req.ulimits {
        ulimits.push(Ulimit::parse(u).map_err(AgentError::invalid)?);
    }
    let network = match req.network.as_deref().unwrap_or("bridge") {
        "host" => NetworkMode::Host,
        // `none`; bridge networks and `container:NAME` are attached by the agent, which
        // replaces this with the sandbox's namespace (see `containers::network`).
        _ => NetworkMode::None,
    };
    let mut extra_hosts = Vec::new();
    for h in &req.add_hosts {
        let (name, ip) = h.split_once(':').ok_or_else(|| {
            AgentError::invalid(format!("invalid --add-host {h:?}: expected name:ip"))
        })?;
        let ip: IpAddr = ip.parse().map_err(|_| {
            AgentError::invalid(format!(
                "invalid --add-host {h:?}: {ip:?} is not an IP address"
            ))
        })?;
        extra_hosts.push((name.to_string(), ip));
    }
    let mut dns = Vec::new();
    for d in &req.dns {
        dns.push(
            d.parse().map_err(|_| {
                AgentError::invalid(format!("invalid --dns {d:?}: not an IP address"))
            })?,
        );
    }
    if let Some(m) = req.memory {
        if m < 6 * 1024 * 1024 {
            return Err(AgentError::invalid(format!(
                "--memory {m} bytes is below the minimum of 6MB"
            )));
        }
    }
    if let Some(c) = req.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(AgentError::invalid(format!(
                "--cpus {c} must be a positive number"
            )));
        }
    }
    if let Some(w) = &req.workdir {
        if !w.starts_with('/') {
            return Err(AgentError::invalid(format!(
                "the working directory {w:?} is invalid: it must be an absolute path"
            )));
        }
    }
    if let Some(sig) = &req.stop_signal {
        if zlayer_runtime::parse_signal(sig).is_none() {
            return Err(AgentError::invalid(format!(
                "invalid --stop-signal {sig:?}: not a signal name (SIGTERM, TERM) or number (1-64)"
            )));
        }
    }
    let options = RunOptions {
        env_file: req.env_file.clone(),
        env: req.env.clone(),
        user: req.user.clone(),
        workdir: req.workdir.clone(),
        entrypoint: req.entrypoint.clone(),
        cmd: req.cmd.clone(),
        hostname: req.hostname.clone(),
        memory: req.memory,
        memory_swap: req.memory_swap,
        cpus: req.cpus,
        cpu_shares: req.cpu_shares,
        pids_limit: req.pids_limit,
        ulimits,
        mounts,
        read_only: req.read_only,
        cap_add: req.cap_add.clone(),
        cap_drop: req.cap_drop.clone(),
        privileged: req.privileged,
        network,
        extra_hosts,
        dns,
        interactive: req.interactive,
        ..RunOptions::default()
    };
    // Everything that lands in a generated file or that the runtime would refuse with an
    // error chain of its own is checked now, before an image is pulled or a record written.
    zlayer_runtime::validate::run_options(&options).map_err(AgentError::invalid)?;
    Ok(options)
}

/// `--cpus` against this host's CPU count, as the daemon checks it: for a CLI that checks
/// before sending (JSON has no NaN or infinity, so a bad value could not travel as such).
pub fn check_cpus(cpus: f64) -> Result<()> {
    use zlayer_runtime::validate;
    validate::cpus(cpus, validate::host_cpus()).map_err(|e| AgentError::invalid(e.to_string()))
}

/// Names of the named volumes a request uses.
pub fn named_volumes(req: &CreateRequest) -> Vec<String> {
    req.volumes
        .iter()
        .filter_map(|v| v.split(':').next())
        .filter(|src| !src.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// Named volumes used by a stored request (the `spec` of a container record).
pub fn named_volumes_of(spec: &serde_json::Value) -> Vec<String> {
    serde_json::from_value::<CreateRequest>(spec.clone())
        .map(|r| named_volumes(&r))
        .unwrap_or_default()
}

/// `SRC:DST[:ro|rw]`.
fn parse_volume(spec: &str, volumes_dir: &Path) -> Result<VolumeMount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => {
            return Err(AgentError::invalid(format!(
                "invalid volume {spec:?}: expected SRC:DST[:ro]"
            )))
        }
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => {
            return Err(AgentError::invalid(format!(
                "invalid volume {spec:?}: unknown mode {other:?} (use ro or rw)"
            )))
        }
    };
    if !dst.starts_with('/') {
        return Err(AgentError::invalid(format!(
            "invalid volume {spec:?}: the container path {dst:?} must be absolute"
        )));
    }
    let source = if src.starts_with('/') {
        let p = PathBuf::from(src);
        if !p.exists() {
            return Err(AgentError::invalid(format!(
                "invalid volume {spec:?}: the host path {src} does not exist"
            )));
        }
        p
    } else {
        crate::volumes::validate_volume_name(src)?;
        crate::volumes::ensure_volume_dir(volumes_dir, src)?
    };
    Ok(VolumeMount {
        source: VolumeSource::Bind(source),
        target: dst.to_string(),
        read_only,
    })
}

/// `DST[:size=N]` with N in bytes or with a k/m/g suffix.
fn parse_tmpfs(spec: &str) -> Result<VolumeMount> {
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !dst.starts_with('/') {
        return Err(AgentError::invalid(format!(
            "invalid --tmpfs {spec:?}: the container path must be absolute"
        )));
    }
    let mut size = None;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", v)) => {
                size = Some(parse_bytes(v).ok_or_else(|| {
                    AgentError::invalid(format!("invalid --tmpfs {spec:?}: bad size {v:?}"))
                })?)
            }
            _ => {
                return Err(AgentError::invalid(format!(
                    "invalid --tmpfs {spec:?}: unknown option {opt:?} (supported: size=N)"
                )))
            }
        }
    }
    Ok(VolumeMount {
        source: VolumeSource::Tmpfs { size },
        target: dst.to_string(),
        read_only: false,
    })
}

/// Docker's size syntax: `123`, `64k`, `64m`, `1g` (binary multiples, case-insensitive, optional `b`).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().ok()?;
    let bytes = v * mult as f64;
    // Above i64::MAX a size cannot be a limit any kernel interface takes (the cast would
    // saturate, and `as i64` turned 10e30 into -1).
    if !(v >= 0.0 && bytes.is_finite() && bytes <= i64::MAX as f64) {
        return None;
    }
    Some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(parse_bytes("-1m"), None);
        assert_eq!(parse_bytes("10e30"), None);
        assert_eq!(parse_bytes("nan"), None);
        assert_eq!(parse_bytes("inf"), None);
    }

    #[test]
    fn volumes_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let req = CreateRequest {
            image: "x".into(),
            volumes: vec![
                format!("{}:/data:ro", dir.path().display()),
                "cache:/cache".into(),
            ],
            tmpfs: vec!["/tmp:size=1m".into()],
            ..Default::default()
        };
        let o = to_run_options(&req, &dir.path().join("volumes")).unwrap();
        assert_eq!(o.mounts.len(), 3);
        assert!(o.mounts[0].read_only);
        assert!(dir.path().join("volumes/cache/_data").is_dir());
        assert_eq!(
            o.mounts[2].source,
            VolumeSource::Tmpfs {
                size: Some(1 << 20)
            }
        );

        for (bad, needle) in [
            ("/nonexistent-zlayer:/x", "does not exist"),
            ("a:b", "must be absolute"),
            ("/:/x:rx", "unknown mode"),
            ("a", "expected SRC:DST"),
        ] {
            let req = CreateRequest {
                image: "x".into(),
                volumes: vec![bad.into()],
                ..Default::default()
            };
            let e = to_run_options(&req, dir.path()).unwrap_err();
            assert!(e.message.contains(needle), "{bad}: {e}");
        }
    }
}

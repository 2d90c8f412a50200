//! The spec generator: request + [`HostFacts`] -> [`GeneratedBundle`], without I/O. One
//! function per part of config.json (process, mounts, namespaces, resources, linux), each
//! following docker's rules (see the tests for each rule).

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use super::host::HostFacts;
use super::user::{ImageUsers, ResolvedUser};
use super::{
    controller_needs, effective_caps_within, has_env, hosts_file, merge_env, parse_signal,
    resolv_conf, rlimit_type, seccomp, validate, BundleError, ContainerSpec, GeneratedBundle,
    NetworkMode, RunOptions, VolumeSource, CPU_PERIOD, DEFAULT_CGROUP_PARENT, DEFAULT_PATH,
    DEFAULT_SHM_SIZE, HOSTNAME_FILE, HOSTS_FILE, MASKED_PATHS, READONLY_PATHS, RESOLV_FILE,
};

/// Builds the bundle for one container. Reads only what [`HostFacts::gather`] reads (the
/// rootfs's /etc/passwd and /etc/group, the host's /etc/resolv.conf, ...); writes nothing.
#[tracing::instrument(level = "debug", skip_all)]
pub fn generate(input: &ContainerSpec<'_>) -> Result<GeneratedBundle, BundleError> {
    generate_with(input, HostFacts::gather(input))
}

/// [`generate`] on given host facts: pure, the same facts give the same bundle.
pub fn generate_with(
    input: &ContainerSpec<'_>,
    mut facts: HostFacts,
) -> Result<GeneratedBundle, BundleError> {
    let opts = input.options;
    validate::run_options_with(opts, &|| facts.host_cpus).map_err(BundleError::InvalidOption)?;
    let img = input.image.config().clone().unwrap_or_default();

    let args = process_args(opts, &img)?;
    let hostname = match (&opts.hostname, &opts.network) {
        (Some(h), _) => h.clone(),
        (None, NetworkMode::Host) => facts.hostname.clone(),
        (None, _) => input.id.chars().take(12).collect(),
    };
    let user_spec = opts
        .user
        .clone()
        .or_else(|| img.user().clone())
        .unwrap_or_default();
    // Taken out: an error of reading them moves into the result.
    let users = std::mem::replace(&mut facts.image_users, Ok(ImageUsers::default()))?;
    let user = users.resolve(&user_spec)?;
    let env = environment(opts, &img, &hostname, &user)?;
    // docker: --workdir, else the image's WorkingDir, else /.
    let workdir = opts
        .workdir
        .clone()
        .or_else(|| img.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !workdir.starts_with('/') {
        return Err(BundleError::RelativeWorkdir(workdir));
    }
    let caps = effective_caps_within(opts, facts.bounding_set)?;
    let process = process(opts, &user, args, env, &workdir, &caps)?;
    let mounts = mounts(input, &facts)?;
    let linux = linux(input, &facts, &caps)?;

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
        if host_mode {
            facts.etc_hosts.as_deref()
        } else {
            None
        },
    );
    let resolv = resolv_conf(&facts.resolv_conf, &opts.dns, &opts.dns_search, host_mode);
    Ok(GeneratedBundle {
        spec,
        hostname,
        hosts,
        resolv_conf: resolv,
        stop_signal,
        workdir,
    })
}

/// The command line (docker: --entrypoint clears Cmd; CMD args replace Cmd).
fn process_args(
    opts: &RunOptions,
    img: &oci_spec::image::Config,
) -> Result<Vec<String>, BundleError> {
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
    Ok(args)
}

/// The environment: image Env, then --env-file, then -e; PATH and HOME when unset.
fn environment(
    opts: &RunOptions,
    img: &oci_spec::image::Config,
    hostname: &str,
    user: &ResolvedUser,
) -> Result<Vec<String>, BundleError> {
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
    Ok(env)
}

/// The spec's `process`: identity, command, environment, capabilities, rlimits.
fn process(
    opts: &RunOptions,
    user: &ResolvedUser,
    args: Vec<String>,
    env: Vec<String>,
    workdir: &str,
    caps: &[String],
) -> Result<Value, BundleError> {
    let mut rlimits: Vec<Value> = Vec::new();
    for u in &opts.ulimits {
        let t = rlimit_type(&u.name).ok_or_else(|| BundleError::UnknownUlimit(u.name.clone()))?;
        rlimits.push(json!({"type": t, "soft": u.soft, "hard": u.hard}));
    }
    Ok(json!({
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
    }))
}

/// The spec's `mounts`: the kernel filesystems, the etc files of the container directory,
/// then the user's `-v` and `--tmpfs` in their order.
fn mounts(input: &ContainerSpec<'_>, facts: &HostFacts) -> Result<Vec<Value>, BundleError> {
    let opts = input.options;
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
    if facts.cgroup_v2 {
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
                if facts.missing_bind_sources.contains(src) {
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
    Ok(mounts)
}

/// The spec's `linux`: namespaces, resources, cgroup path, and the confinement of an
/// unprivileged container (masked and read-only paths, seccomp) or a privileged one's devices.
fn linux(
    input: &ContainerSpec<'_>,
    facts: &HostFacts,
    caps: &[String],
) -> Result<Value, BundleError> {
    let opts = input.options;
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
    if facts.cgroup_v2 {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let resources = resources(opts, facts)?;
    let parent = opts
        .cgroup_parent
        .clone()
        .unwrap_or_else(|| DEFAULT_CGROUP_PARENT.to_string());
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": format!("{}/{}", parent.trim_end_matches('/'), input.id),
        "rootfsPropagation": "private",
    });
    if opts.privileged {
        linux["devices"] = Value::Array(facts.devices.clone());
    } else {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        linux["seccomp"] = serde_json::to_value(seccomp::default_profile(caps))
            .map_err(|e| BundleError::Spec(e.to_string()))?;
    }
    Ok(linux)
}

/// The spec's `linux.resources`: device access, memory (+ swap where the host accounts
/// it), CPU quota and shares, pids; fails when the host lacks a controller they need.
fn resources(opts: &RunOptions, facts: &HostFacts) -> Result<Value, BundleError> {
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
        if facts.swap_accounting {
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
    let needs = controller_needs(opts);
    if let Some(available) = &facts.controllers {
        available.check(&needs)?;
    }
    Ok(Value::Object(resources))
}

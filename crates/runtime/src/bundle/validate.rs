//! Checks of user-supplied run options that the kernel or libcontainer would otherwise
//! reject with an error chain that does not say which option was wrong, or worse, accept
//! with a meaning the user did not ask for (a uid of 2^32-1 is "do not change" to setresuid,
//! so it ran the process as root; a newline in `--add-host` adds lines to /etc/hosts).
//!
//! Every function returns an [`InvalidOption`]: the option that was wrong, and a message in
//! the user's terms naming the option and the value.

use std::path::{Component, Path, PathBuf};

/// A run or exec option the runtime refuses. `option` says which one (`--hostname`, `-e`,
/// `-v`, or the field of a deployment); the message names the option and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidOption {
    /// The option as the user wrote it, e.g. `--cpus` (for exec: `exec`, `-e`, `--user`, ...).
    pub option: String,
    message: String,
}

impl InvalidOption {
    /// `option` is wrong; `message` says how, in the user's terms.
    pub fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidOption {
            option: option.into(),
            message: message.into(),
        }
    }
}

/// For callers that report errors as text (the agent's `AgentError::invalid`, the shim's
/// exec helper): the message.
impl From<InvalidOption> for String {
    fn from(e: InvalidOption) -> String {
        e.message
    }
}

/// The largest uid or gid accepted: docker's range (the kernel reserves `(uid_t)-1`, and ids
/// above 2^31-1 are refused by much of userland).
pub const MAX_ID: u32 = i32::MAX as u32;

/// The kernel's limit on a hostname (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;

/// The smallest useful `--pids-limit`: libcontainer starts a container with two processes in
/// its cgroup (the intermediate process that sets up namespaces, then the init it forks), so a
/// limit of 1 makes every start fail inside the runtime.
pub const MIN_PIDS_LIMIT: i64 = 2;

/// Smallest `--cpus` (docker's: one hundredth of a CPU; below it the CFS quota would be under
/// the kernel's 1 ms minimum).
pub const MIN_CPUS: f64 = 0.01;

/// Refuses control characters (newline, tab, NUL, ...) in a value that is written into a
/// generated file such as /etc/hosts or /etc/resolv.conf, where they would add lines.
pub fn no_control_chars(option: &str, value: &str) -> Result<(), InvalidOption> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(InvalidOption::new(
            option,
            format!("invalid {option} {value:?}: contains the control character {c:?}"),
        )),
        None => Ok(()),
    }
}

/// A hostname as the kernel and resolvers accept it: 1 to 64 characters, dot-separated labels
/// of letters, digits and `-` (RFC 1123; docker also allows `_`), none empty or starting or
/// ending with `-`.
pub fn hostname(value: &str) -> Result<(), InvalidOption> {
    no_control_chars("--hostname", value)?;
    if value.is_empty() {
        return Err(InvalidOption::new(
            "--hostname",
            "invalid --hostname \"\": it is empty",
        ));
    }
    if value.len() > MAX_HOSTNAME_LEN {
        return Err(InvalidOption::new(
            "--hostname",
            format!(
                "invalid --hostname {value:?}: {} characters, the limit is {MAX_HOSTNAME_LEN}",
                value.len()
            ),
        ));
    }
    host_name_chars("--hostname", value)
}

/// The name part of `--add-host NAME:IP` (same character rules as a hostname, up to 255).
pub fn host_alias(value: &str) -> Result<(), InvalidOption> {
    no_control_chars("--add-host", value)?;
    if value.is_empty() || value.len() > 255 {
        return Err(InvalidOption::new(
            "--add-host",
            format!("invalid --add-host name {value:?}: must be 1 to 255 characters"),
        ));
    }
    host_name_chars("--add-host name", value)
}

fn host_name_chars(option: &str, value: &str) -> Result<(), InvalidOption> {
    for label in value.split('.') {
        if label.is_empty() {
            return Err(InvalidOption::new(
                option,
                format!("invalid {option} {value:?}: empty label between dots"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidOption::new(
                option,
                format!("invalid {option} {value:?}: a label may not start or end with '-'"),
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(InvalidOption::new(option, format!(
                "invalid {option} {value:?}: {c:?} is not allowed (letters, digits, '-', '_' and '.')"
            )));
        }
    }
    Ok(())
}

/// A numeric user or group id of `-u`, if `part` is one: `Some(Ok(id))` for an id in range,
/// `Some(Err(..))` for a number (or a negative one) outside `0..=MAX_ID`, `None` for a name.
pub fn numeric_id(part: &str) -> Option<Result<u32, InvalidOption>> {
    let digits = part.strip_prefix('-').unwrap_or(part);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let out_of_range = || {
        InvalidOption::new(
            "--user",
            format!("invalid user or group id {part}: uids and gids must be in range 0-{MAX_ID}"),
        )
    };
    if part.starts_with('-') {
        return Some(Err(out_of_range()));
    }
    Some(match part.parse::<u64>() {
        Ok(n) if n <= MAX_ID as u64 => Ok(n as u32),
        _ => Err(out_of_range()),
    })
}

/// Syntax of `-u user[:group]` (names are resolved later, in the image): ids in range, no
/// control characters, at most one `:`.
pub fn user_spec(spec: &str) -> Result<(), InvalidOption> {
    no_control_chars("--user", spec)?;
    let mut parts = spec.splitn(2, ':');
    for part in parts.by_ref() {
        if let Some(Err(e)) = numeric_id(part) {
            return Err(e);
        }
    }
    if let Some((_, g)) = spec.split_once(':') {
        if g.is_empty() || g.contains(':') {
            return Err(InvalidOption::new(
                "--user",
                format!("invalid user specification {spec:?}: expected NAME|UID[:GROUP|GID]"),
            ));
        }
    }
    Ok(())
}

/// `KEY=VALUE` entries of `-e` (run or exec): a non-empty key without `=` or control
/// characters; the value may hold anything but NUL (which cannot be passed to execve).
pub fn env_entry(entry: &str) -> Result<(), InvalidOption> {
    let Some((key, value)) = entry.split_once('=') else {
        return Err(InvalidOption::new(
            "-e",
            format!("invalid environment variable {entry:?}: expected KEY=VALUE"),
        ));
    };
    if key.is_empty() {
        return Err(InvalidOption::new(
            "-e",
            format!("invalid environment variable {entry:?}: the name before '=' is empty"),
        ));
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidOption::new("-e", format!(
            "invalid environment variable {entry:?}: the name contains whitespace or a control character"
        )));
    }
    if value.contains('\0') {
        return Err(InvalidOption::new(
            "-e",
            format!("invalid environment variable {key:?}: the value contains a NUL byte"),
        ));
    }
    Ok(())
}

/// `--cpus`: a finite number from [`MIN_CPUS`] to the host's CPU count (docker's check and
/// message; a quota above the host's CPUs would only pretend to be a limit).
pub fn cpus(value: f64, host_cpus: usize) -> Result<(), InvalidOption> {
    let max = host_cpus.max(1) as f64;
    if !value.is_finite() || value < MIN_CPUS || value > max {
        return Err(InvalidOption::new("--cpus", format!(
            "invalid --cpus {value}: range of CPUs is from {MIN_CPUS:.2} to {max:.2}, as there are only {host_cpus} CPUs available"
        )));
    }
    Ok(())
}

/// `--pids-limit`: `<= 0` is unlimited (docker); 1 cannot start a container, see
/// [`MIN_PIDS_LIMIT`].
pub fn pids_limit(value: i64) -> Result<(), InvalidOption> {
    if value > 0 && value < MIN_PIDS_LIMIT {
        return Err(InvalidOption::new("--pids-limit", format!(
            "invalid --pids-limit {value}: the container's init could not start within it \
             (starting a container takes {MIN_PIDS_LIMIT} processes); use at least {MIN_PIDS_LIMIT}, or 0 for no limit"
        )));
    }
    Ok(())
}

/// The lexical normal form of an absolute container path (`//a/./b/../c/` -> `/a/c`), so
/// that `/proc/` and `/x/../proc` are recognised as `/proc`.
pub fn normalize_target(target: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(target).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Files under /proc that may be replaced by a bind mount (runc's list; lxcfs mounts these
/// to show a container its own limits). Anything else under /proc would let a mount hide or
/// replace the kernel's view the runtime relies on (masked paths, /proc/self).
const PROC_FILES_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
];

/// A mount destination the runtime can honour: not `/` (the rootfs itself), not /proc or
/// under it (except the files of `PROC_FILES_ALLOWED`), not /sys (replacing sysfs as a whole). `option`
/// names the flag in the message (`-v`, `--tmpfs`).
pub fn mount_target(option: &str, target: &str) -> Result<PathBuf, InvalidOption> {
    no_control_chars(option, target)?;
    if !target.starts_with('/') {
        return Err(InvalidOption::new(
            option,
            format!("invalid {option} target {target:?}: the container path must be absolute"),
        ));
    }
    let norm = normalize_target(target);
    let refused = norm == Path::new("/")
        || norm == Path::new("/sys")
        || (norm.starts_with("/proc") && !PROC_FILES_ALLOWED.iter().any(|p| norm == Path::new(p)));
    if refused {
        return Err(InvalidOption::new(option, format!(
            "invalid {option} target {target:?}: {} cannot be a mount destination (the runtime mounts it itself)",
            norm.display()
        )));
    }
    Ok(norm)
}

/// Every check of this module that applies to `opts`, in the order the options appear on
/// docker's command line; the first failure is returned.
pub fn run_options(opts: &super::RunOptions) -> Result<(), InvalidOption> {
    run_options_with(opts, &host_cpus)
}

/// [`run_options`] with the host's CPU count from `host_cpus` (asked only for `--cpus`).
pub fn run_options_with(
    opts: &super::RunOptions,
    host_cpus: &dyn Fn() -> usize,
) -> Result<(), InvalidOption> {
    if let Some(h) = &opts.hostname {
        hostname(h)?;
    }
    if let Some(u) = &opts.user {
        user_spec(u)?;
    }
    if let Some(c) = opts.cpus {
        cpus(c, host_cpus())?;
    }
    if let Some(p) = opts.pids_limit {
        pids_limit(p)?;
    }
    for (name, _) in &opts.extra_hosts {
        host_alias(name)?;
    }
    for d in &opts.dns_search {
        no_control_chars("--dns-search", d)?;
        if d.is_empty() || d.contains(char::is_whitespace) {
            return Err(InvalidOption::new(
                "--dns-search",
                format!("invalid --dns-search {d:?}: not a domain name"),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &opts.mounts {
        let option = match m.source {
            super::VolumeSource::Bind(_) => "-v",
            super::VolumeSource::Tmpfs { .. } => "--tmpfs",
        };
        let norm = mount_target(option, &m.target)?;
        if !seen.insert(norm.clone()) {
            return Err(InvalidOption::new(
                option,
                format!(
                    "duplicate mount point: {} is the target of more than one -v/--tmpfs",
                    norm.display()
                ),
            ));
        }
    }
    Ok(())
}

/// An exec request (`exec -e/-u/-w CMD`): what would otherwise fail deep in the runtime (an
/// empty variable name panicked the exec helper, a NUL cannot reach execve).
pub fn exec_spec(spec: &crate::protocol::ExecSpec) -> Result<(), InvalidOption> {
    if spec.args.is_empty() {
        return Err(InvalidOption::new("exec", "exec needs a command"));
    }
    if let Some(a) = spec.args.iter().find(|a| a.contains('\0')) {
        return Err(InvalidOption::new(
            "exec",
            format!("invalid exec argument {a:?}: contains a NUL byte"),
        ));
    }
    for e in &spec.env {
        env_entry(e)?;
    }
    if let Some(u) = &spec.user {
        user_spec(u)?;
    }
    if let Some(w) = &spec.cwd {
        no_control_chars("--workdir", w)?;
        if !w.starts_with('/') {
            return Err(InvalidOption::new(
                "--workdir",
                format!("invalid --workdir {w:?}: the working directory must be an absolute path"),
            ));
        }
    }
    Ok(())
}

/// The host's online CPU count (for [`cpus`]).
pub fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_out_of_range_are_refused() {
        assert_eq!(numeric_id("0"), Some(Ok(0)));
        assert_eq!(numeric_id("2147483647"), Some(Ok(MAX_ID)));
        for bad in ["4294967295", "2147483648", "-1", "99999999999999999999"] {
            let e = numeric_id(bad).unwrap().unwrap_err();
            assert!(
                e.to_string().contains("must be in range 0-2147483647"),
                "{bad}: {e}"
            );
        }
        assert_eq!(numeric_id("app"), None);
        assert!(user_spec("4294967295").is_err());
        assert!(user_spec("app:-1").is_err());
        assert!(user_spec("1000:1000").is_ok());
        assert!(user_spec("app:").is_err());
    }

    #[test]
    fn hostnames() {
        assert!(hostname("web-1.example").is_ok());
        assert!(hostname(&"a".repeat(64)).is_ok());
        let e = hostname(&"a".repeat(100)).unwrap_err();
        assert!(
            e.to_string().contains("100 characters, the limit is 64"),
            "{e}"
        );
        assert!(hostname("a\nb")
            .unwrap_err()
            .to_string()
            .contains("control character"));
        assert!(hostname("a b").is_err());
        assert!(hostname("-a").is_err());
        assert!(hostname("a..b").is_err());
        assert!(host_alias("evil\n1.2.3.4 bank").is_err());
        assert!(host_alias("db.local").is_ok());
    }

    #[test]
    fn env_entries() {
        assert!(env_entry("A=b\nc").is_ok());
        assert!(env_entry("=")
            .unwrap_err()
            .to_string()
            .contains("name before '=' is empty"));
        assert!(env_entry("A").is_err());
        assert!(env_entry("A\nB=1").is_err());
        assert!(env_entry("A=\0").is_err());
    }

    #[test]
    fn cpu_range_like_docker() {
        assert!(cpus(0.5, 2).is_ok());
        assert!(cpus(2.0, 2).is_ok());
        for bad in [f64::NAN, f64::INFINITY, 1e-7, 1000.0, 0.0, -1.0] {
            let e = cpus(bad, 2).unwrap_err();
            assert!(
                e.to_string().contains("range of CPUs is from 0.01 to 2.00"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn pids_limits() {
        assert!(pids_limit(0).is_ok());
        assert!(pids_limit(-1).is_ok());
        assert!(pids_limit(2).is_ok());
        assert!(pids_limit(1)
            .unwrap_err()
            .to_string()
            .contains("init could not start"));
    }

    #[test]
    fn mount_targets() {
        for bad in [
            "/proc",
            "/proc/",
            "/x/../proc",
            "/proc/sys",
            "/",
            "//",
            "/sys",
        ] {
            assert!(mount_target("-v", bad).is_err(), "{bad}");
        }
        for ok in [
            "/data",
            "/proc/cpuinfo",
            "/sys/fs/x",
            "/dev/fuse",
            "/x.sock",
        ] {
            assert!(mount_target("-v", ok).is_ok(), "{ok}");
        }
        assert_eq!(normalize_target("/a/./b/../c/"), PathBuf::from("/a/c"));
    }

    #[test]
    fn errors_name_the_option_that_was_wrong() {
        assert_eq!(hostname("-x").unwrap_err().option, "--hostname");
        assert_eq!(host_alias("").unwrap_err().option, "--add-host");
        assert_eq!(user_spec("4294967295").unwrap_err().option, "--user");
        assert_eq!(env_entry("=x").unwrap_err().option, "-e");
        assert_eq!(cpus(0.0, 2).unwrap_err().option, "--cpus");
        assert_eq!(pids_limit(1).unwrap_err().option, "--pids-limit");
        assert_eq!(
            mount_target("--tmpfs", "/proc").unwrap_err().option,
            "--tmpfs"
        );
        let e = crate::bundle::Ulimit::parse("nofile=x").unwrap_err();
        assert_eq!(e.option, "--ulimit");
        assert_eq!(
            e.to_string(),
            "invalid ulimit \"nofile=x\": \"x\" is not a number"
        );
        // Text callers get the message unchanged.
        let text: String = pids_limit(1).unwrap_err().into();
        assert!(text.starts_with("invalid --pids-limit 1:"), "{text}");
    }
}

//! The container's seccomp filter, compiled once per profile and installed by the shim's
//! executor.
//!
//! Why this is ours: libcontainer compiles `linux.seccomp` with libseccomp inside every
//! container's init process (`seccomp::initialize_seccomp` builds *and loads* the filter;
//! it offers no way to build without loading, nor to pass an already compiled program).
//! For Docker's default profile over three architectures that is ~20 ms of a ~45 ms
//! start, spent again for every container and every exec although the profile never
//! changes. So the shim takes the profile out of the config.json libcontainer reads,
//! compiles it to classic BPF once, keeps the program in
//! `<state>/seccomp/<sha256>.bpf`, and [`super::executor::ShimExecutor`] installs it in
//! the container's process at the point where libcontainer would have (capabilities
//! dropped, no_new_privileges set, right before the workload runs).
//!
//! The bundle keeps the profile: [`PROFILE_FILE`] holds it byte for byte and the
//! annotation [`PROFILE_ANNOTATION`] in config.json names its sha256, so a restarted
//! container or an exec gets exactly the same filter, and a config.json without the
//! annotation (a privileged container, or a regenerated bundle) never picks up a stale
//! profile. Profiles this path does not cover (notify actions, a listener, or no
//! no_new_privileges, where the filter must go in before capabilities are dropped) stay
//! in config.json for libcontainer to apply as before.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use sha2::{Digest, Sha256};

use super::error::IoFailure;

/// The profile taken out of config.json, as it was there (JSON).
pub(crate) const PROFILE_FILE: &str = "seccomp.json";
/// config.json annotation: sha256 (hex) of [`PROFILE_FILE`]; present iff the shim applies it.
pub(crate) const PROFILE_ANNOTATION: &str = "org.zlayer.seccomp.sha256";
/// Bumped when the translation below changes, so old cached programs are not reused.
const TRANSLATION_VERSION: &str = "zlayer-seccomp-bpf-2";
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;

/// Why the container's seccomp filter could not be prepared or installed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeccompError {
    #[error(transparent)]
    Io(#[from] IoFailure),
    /// config.json or the saved profile cannot be read as what it should be.
    #[error("{}: {problem}", path.display())]
    Config { path: PathBuf, problem: String },
    /// The saved profile is not the one config.json names.
    #[error("seccomp profile {} has sha256 {actual}, but {} expects {expected}", path.display(), config.display())]
    ProfileChanged {
        path: PathBuf,
        config: PathBuf,
        actual: String,
        expected: String,
    },
    /// libseccomp refused part of the profile.
    #[error("{what}: {source}")]
    Compile {
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp trace value {0} too large")]
    TraceValue(i32),
    #[error("seccomp notify actions are applied by libcontainer")]
    Notify,
    /// Bytes that are not a classic BPF program the kernel would take.
    #[error("{0} bytes is not a program of 1 to {MAX_INSNS} BPF instructions")]
    NotAProgram(usize),
    #[error("libseccomp's program: {0}")]
    Libseccomp(Box<SeccompError>),
    #[error("installing the container's seccomp filter ({insns} instructions, flags {flags:#x}): {source}")]
    Install {
        insns: usize,
        flags: libc::c_ulong,
        #[source]
        source: std::io::Error,
    },
    /// The helper process of [`prepare_in_child`] failed (its message, which crossed a
    /// pipe as text) or answered something unreadable.
    #[error("{0}")]
    Helper(String),
}

/// A compiled filter ready to install, and the seccomp(2) flags the profile asked for.
#[derive(Debug)]
pub(crate) struct SeccompProgram {
    insns: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl SeccompProgram {
    /// Installs the filter on the calling thread (the container process is single-threaded
    /// at this point). Needs no_new_privileges (checked before the profile was taken over).
    pub(crate) fn install(&self) -> Result<(), SeccompError> {
        let prog = libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `insns`, which outlives the call; the kernel copies the
        // program and does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(SeccompError::Install {
                insns: self.insns.len(),
                flags: self.flags,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// Prepares the bundle for a start or an exec and returns the filter the shim must install,
/// or `None` when there is none to install by us (no profile, or libcontainer applies it).
pub(crate) fn prepare(bundle: &Path, state: &Path) -> Result<Option<SeccompProgram>, SeccompError> {
    let config_path = bundle.join("config.json");
    let bad_config = |problem: String| SeccompError::Config {
        path: config_path.clone(),
        problem,
    };
    let raw =
        fs::read(&config_path).map_err(|e| IoFailure::new(config_path.display().to_string(), e))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| bad_config(format!("invalid JSON: {e}")))?;
    let profile_json = match config.pointer("/linux/seccomp") {
        Some(v) if !v.is_null() => {
            let profile: LinuxSeccomp = serde_json::from_value(v.clone())
                .map_err(|e| bad_config(format!("linux.seccomp: {e}")))?;
            let nnp = config
                .pointer("/process/noNewPrivileges")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if !nnp || !is_covered(&profile) {
                return Ok(None);
            }
            let bytes = serde_json::to_vec(v).map_err(|e| bad_config(e.to_string()))?;
            let sum = hex::encode(Sha256::digest(&bytes));
            write_atomic(&bundle.join(PROFILE_FILE), &bytes)?;
            // Remove it from what libcontainer reads; remember which profile replaces it.
            if let Some(linux) = config.get_mut("linux").and_then(|l| l.as_object_mut()) {
                linux.remove("seccomp");
            }
            let obj = config
                .as_object_mut()
                .ok_or_else(|| bad_config("not a JSON object".into()))?;
            let ann = obj
                .entry("annotations")
                .or_insert_with(|| serde_json::json!({}));
            let ann = ann
                .as_object_mut()
                .ok_or_else(|| bad_config("annotations is not an object".into()))?;
            ann.insert(PROFILE_ANNOTATION.into(), sum.into());
            let out = serde_json::to_vec_pretty(&config).map_err(|e| bad_config(e.to_string()))?;
            write_atomic(&config_path, &out)?;
            bytes
        }
        _ => {
            let Some(sum) = config
                .pointer(&format!("/annotations/{PROFILE_ANNOTATION}"))
                .and_then(|v| v.as_str())
            else {
                return Ok(None);
            };
            let path = bundle.join(PROFILE_FILE);
            let bytes = fs::read(&path).map_err(|e| {
                IoFailure::new(
                    format!(
                        "{} names seccomp profile {sum}, but {} cannot be read",
                        config_path.display(),
                        path.display()
                    ),
                    e,
                )
            })?;
            let actual = hex::encode(Sha256::digest(&bytes));
            if actual != sum {
                return Err(SeccompError::ProfileChanged {
                    path,
                    config: config_path,
                    actual,
                    expected: sum.to_string(),
                });
            }
            bytes
        }
    };
    let profile: LinuxSeccomp =
        serde_json::from_slice(&profile_json).map_err(|e| SeccompError::Config {
            path: bundle.join(PROFILE_FILE),
            problem: e.to_string(),
        })?;
    let insns = cached_program(&profile, &profile_json, &state.join("seccomp"))?;
    Ok(Some(SeccompProgram {
        insns,
        flags: filter_flags(&profile),
    }))
}

/// [`prepare`] in a throwaway child process, for the long-lived shim: parsing config.json
/// and the profile (and, the first time, libseccomp's compilation) allocate a few hundred
/// KiB that would leave the idle shim's heap fragmented (+36 KiB PSS per shim measured).
/// Only the finished program crosses the pipe.
pub(crate) fn prepare_in_child(
    bundle: &Path,
    state: &Path,
) -> Result<Option<SeccompProgram>, SeccompError> {
    use std::os::fd::OwnedFd;
    let (r, w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| IoFailure::new("pipe", e))?;
    // SAFETY: the shim is single-threaded, so the child may run arbitrary code; it leaves
    // through _exit without running the shim's exit paths.
    match unsafe { nix::unistd::fork() }.map_err(|e| IoFailure::new("fork", e))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let msg = match prepare(bundle, state) {
                Ok(None) => vec![b'N'],
                Ok(Some(p)) => {
                    let mut m = vec![b'P'];
                    // c_ulong is u32 on 32-bit targets
                    #[allow(clippy::unnecessary_cast)]
                    m.extend_from_slice(&(p.flags as u64).to_le_bytes());
                    m.extend_from_slice(&(p.insns.len() as u32).to_le_bytes());
                    for i in &p.insns {
                        m.extend_from_slice(&i.code.to_ne_bytes());
                        m.extend_from_slice(&[i.jt, i.jf]);
                        m.extend_from_slice(&i.k.to_ne_bytes());
                    }
                    m
                }
                Err(e) => [b"E".as_slice(), e.to_string().as_bytes()].concat(),
            };
            let ok = File::from(w).write_all(&msg).is_ok();
            // SAFETY: leaving the forked child without running the shim's exit paths.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut f = File::from(r);
            let out = read_answer(&mut f);
            drop(f);
            let _ = nix::sys::wait::waitpid(child, None);
            out
        }
    }
}

/// The parent's side of [`prepare_in_child`]'s pipe.
fn read_answer(f: &mut File) -> Result<Option<SeccompProgram>, SeccompError> {
    use std::io::Read;
    let mut tag = [0u8; 1];
    let res = f.read_exact(&mut tag);
    let helper = SeccompError::Helper;
    match (res, tag[0]) {
        (Err(e), _) => Err(helper(format!(
            "the seccomp helper died without answering ({e})"
        ))),
        (Ok(()), b'N') => Ok(None),
        (Ok(()), b'E') => {
            let mut m = String::new();
            let _ = f.read_to_string(&mut m);
            Err(helper(m))
        }
        (Ok(()), b'P') => {
            let mut head = [0u8; 12];
            f.read_exact(&mut head)
                .map_err(|e| IoFailure::new("reading the seccomp helper's answer", e))?;
            let flags = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
            let n = u32::from_le_bytes(head[8..].try_into().unwrap_or_default()) as usize;
            if n == 0 || n > MAX_INSNS {
                return Err(helper(format!("the seccomp helper sent {n} instructions")));
            }
            let mut bytes = vec![0u8; n * std::mem::size_of::<libc::sock_filter>()];
            f.read_exact(&mut bytes)
                .map_err(|e| IoFailure::new("reading the seccomp helper's answer", e))?;
            Ok(Some(SeccompProgram {
                insns: decode(&bytes)?,
                flags: flags as libc::c_ulong,
            }))
        }
        (Ok(()), t) => Err(helper(format!("the seccomp helper answered {t:#x}"))),
    }
}

/// Whether the shim can apply this profile itself with identical effect: a notify action
/// needs a listener descriptor handed to libcontainer's machinery, which we do not rebuild.
/// Profiles left to libcontainer get its reading of `SCMP_CMP_MASKED_EQ` (see [`arg_compare`]);
/// the bundles we generate never need that path.
fn is_covered(p: &LinuxSeccomp) -> bool {
    let notify = p.default_action() == LinuxSeccompAction::ScmpActNotify
        || p.syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    let waitkill = p
        .flags()
        .iter()
        .flatten()
        .any(|f| *f == LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv);
    !notify && !waitkill && p.listener_path().is_none()
}

fn filter_flags(p: &LinuxSeccomp) -> libc::c_ulong {
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // excluded by is_covered
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    flags
}

/// The compiled program for `profile`: read from the cache, or compiled and cached.
fn cached_program(
    profile: &LinuxSeccomp,
    profile_json: &[u8],
    dir: &Path,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut key = Sha256::new();
    key.update(TRANSLATION_VERSION.as_bytes());
    key.update(b"\0");
    // libseccomp's output may differ between its versions.
    if let Ok(v) = ScmpVersion::current() {
        key.update(v.to_string().as_bytes());
    }
    key.update(b"\0");
    key.update(std::env::consts::ARCH.as_bytes());
    key.update(b"\0");
    key.update(profile_json);
    let path = dir.join(format!("{}.bpf", hex::encode(key.finalize())));
    if let Ok(bytes) = fs::read(&path) {
        match decode(&bytes) {
            Ok(insns) => return Ok(insns),
            // A damaged cache entry is rebuilt, never trusted.
            Err(e) => tracing::warn!("ignoring cached seccomp program {}: {e}", path.display()),
        }
    }
    fs::create_dir_all(dir)
        .map_err(|e| IoFailure::new(format!("creating {}", dir.display()), e))?;
    let ctx = compile(profile)?;
    let tmp = temp_path(&path);
    let result = (|| {
        let f = File::create(&tmp)
            .map_err(|e| IoFailure::new(format!("creating {}", tmp.display()), e))?;
        ctx.export_bpf(&f).map_err(|source| SeccompError::Compile {
            what: "exporting the seccomp program".into(),
            source,
        })?;
        drop(f);
        let bytes = fs::read(&tmp).map_err(|e| IoFailure::new(tmp.display().to_string(), e))?;
        let insns = decode(&bytes).map_err(|e| SeccompError::Libseccomp(Box::new(e)))?;
        fs::rename(&tmp, &path).map_err(|e| {
            IoFailure::new(
                format!("renaming {} to {}", tmp.display(), path.display()),
                e,
            )
        })?;
        Ok(insns)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn decode(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSN != 0 || bytes.len() / INSN > MAX_INSNS {
        return Err(SeccompError::NotAProgram(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), IoFailure> {
    let tmp = temp_path(path);
    // 0600: this rewrites config.json, which holds the container's environment.
    let res = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| fs::rename(&tmp, path));
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        IoFailure::new(format!("writing {}", path.display()), e)
    })
}

/// The OCI profile as a libseccomp filter, with the semantics libcontainer (and runc) give
/// it: errno defaults to EPERM, rules with the default action are dropped (libseccomp
/// rejects them), names unknown on this host are skipped, and several conditions on the
/// same argument become separate rules (libseccomp cannot AND them).
fn compile(p: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let refused = |what: String| move |source| SeccompError::Compile { what, source };
    let default = action(p.default_action(), p.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(refused(format!(
        "seccomp default action {:?}",
        p.default_action()
    )))?;
    for &arch in p.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(arch))
            .map_err(refused(format!("seccomp architecture {arch:?}")))?;
    }
    for rule in p.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = rule.args().iter().flatten().map(arg_compare).collect();
        let mut indexes: Vec<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                tracing::debug!("seccomp: system call {name:?} unknown here, skipped");
                continue;
            };
            let added = if conds.is_empty() {
                ctx.add_rule(act, sc).map(|_| ())
            } else if repeated {
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, sc, &[*c]).map(|_| ()))
            } else {
                ctx.add_rule_conditional(act, sc, &conds).map(|_| ())
            };
            added.map_err(refused(format!("seccomp rule for {name} ({act:?})")))?;
        }
    }
    Ok(ctx)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(errno).map_err(|_| SeccompError::TraceValue(errno))?)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::Notify),
    })
}

/// One argument condition. For `SCMP_CMP_MASKED_EQ` the OCI runtime spec (as runc reads it,
/// and as docker's default profile is written) has `value` as the MASK and `valueTwo` as the
/// value the masked argument must equal: docker's `clone` rule is `value: 0x7E020000,
/// valueTwo: 0`, "no namespace flag set". libcontainer 0.7 passes them the other way round,
/// which turns that rule into "mask 0", matching every clone: a container could then create
/// namespaces with clone(2) although unshare(2) is denied. Tested in `clone_rule_denies_namespace_flags`.
fn arg_compare(a: &LinuxSeccompArg) -> ScmpArgCompare {
    let index = a.index() as u32;
    let op = match a.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                index,
                ScmpCompareOp::MaskedEqual(a.value()),
                a.value_two().unwrap_or(0),
            );
        }
    };
    ScmpArgCompare::new(index, op, a.value())
}

fn scmp_arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_partial_and_oversized_programs() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0u8; 12]).is_err());
        assert!(decode(&vec![0u8; 8 * (MAX_INSNS + 1)]).is_err());
        assert_eq!(decode(&[0u8; 16]).unwrap().len(), 2);
    }

    fn bundle_with(profile: bool, nnp: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"noNewPrivileges": nnp, "args": ["true"], "cwd": "/"},
            "linux": {},
        });
        if profile {
            config["linux"]["seccomp"] =
                serde_json::to_value(crate::bundle::seccomp::default_profile(&[])).unwrap();
        }
        fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        dir
    }

    fn config_of(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap()
    }

    #[test]
    fn prepare_moves_the_profile_out_and_finds_it_again() {
        let b = bundle_with(true, true);
        let state = tempfile::tempdir().unwrap();
        let first = prepare(b.path(), state.path()).unwrap().expect("a filter");
        let config = config_of(b.path());
        assert!(config["linux"].get("seccomp").is_none());
        assert!(config["annotations"][PROFILE_ANNOTATION].is_string());
        // a restart or an exec: config.json no longer has it, the same program comes back
        let again = prepare(b.path(), state.path()).unwrap().expect("a filter");
        assert_eq!(first.insns.len(), again.insns.len());
        // a profile that does not match its recorded digest is refused, not ignored
        let side = b.path().join(PROFILE_FILE);
        let mut bytes = fs::read(&side).unwrap();
        bytes.push(b' ');
        fs::write(&side, bytes).unwrap();
        let err = prepare(b.path(), state.path()).unwrap_err();
        assert!(matches!(err, SeccompError::ProfileChanged { .. }), "{err}");
        assert!(err.to_string().contains("sha256"), "{err}");
    }

    #[test]
    fn prepare_leaves_other_bundles_alone() {
        let state = tempfile::tempdir().unwrap();
        // privileged: no profile, nothing to do, a stale seccomp.json is not picked up
        let b = bundle_with(false, false);
        fs::write(b.path().join(PROFILE_FILE), b"{}").unwrap();
        assert!(prepare(b.path(), state.path()).unwrap().is_none());
        // without no_new_privileges the filter must go in before capabilities are
        // dropped: libcontainer keeps doing it
        let b = bundle_with(true, false);
        let before = fs::read(b.path().join("config.json")).unwrap();
        assert!(prepare(b.path(), state.path()).unwrap().is_none());
        assert_eq!(before, fs::read(b.path().join("config.json")).unwrap());
    }

    #[test]
    fn default_profile_compiles_and_caches() {
        let profile = crate::bundle::seccomp::default_profile(&[]);
        let json = serde_json::to_vec(&profile).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = cached_program(&profile, &json, dir.path()).unwrap();
        assert!(a.len() > 10);
        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache file, no temp leftovers");
        let b = cached_program(&profile, &json, dir.path()).unwrap();
        let same = a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k));
        assert!(same);
    }

    /// The default profile, installed for real in a forked child: clone(2) without namespace
    /// flags works (fork), clone(2) with CLONE_NEWUSER is refused with EPERM, as docker's
    /// profile intends for a container without CAP_SYS_ADMIN.
    #[test]
    fn clone_rule_denies_namespace_flags() {
        let profile = crate::bundle::seccomp::default_profile(&[]);
        let json = serde_json::to_vec(&profile).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let program = SeccompProgram {
            insns: cached_program(&profile, &json, dir.path()).unwrap(),
            flags: filter_flags(&profile),
        };
        // SAFETY: the child makes only raw system calls (no allocation, no locks) and _exits;
        // the parent only waits for it.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain system calls on values; clone without a stack duplicates the
                // child like fork, and the grandchild _exits at once.
                unsafe {
                    let mut code = 0;
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                        || program.install().is_err()
                    {
                        libc::_exit(10);
                    }
                    let plain = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
                    if plain == 0 {
                        libc::_exit(0);
                    }
                    if plain < 0 {
                        code |= 1;
                    } else {
                        libc::waitpid(plain as i32, std::ptr::null_mut(), 0);
                    }
                    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
                    let userns = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
                    if userns == 0 {
                        libc::_exit(0);
                    }
                    if userns >= 0 {
                        libc::waitpid(userns as i32, std::ptr::null_mut(), 0);
                        code |= 2;
                    } else if *libc::__errno_location() != libc::EPERM {
                        code |= 4;
                    }
                    libc::_exit(code);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "exit bits: 1 = plain clone refused, 2 = clone(CLONE_NEWUSER) allowed, \
                     4 = refused with another errno, 10 = filter not installed"
                );
            }
        }
    }
}

//! `exec`: running an extra process in the container through libcontainer's tenant
//! builder. The builder runs in a forked child of the shim (it changes process-wide
//! state such as the working directory and dumpability), which reports the new pid on
//! a pipe and exits. The exec'd process is then re-parented to the shim, the child
//! subreaper, which waits for it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::oci_spec::runtime::{Spec, UserBuilder};
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{pipe2, ForkResult, Pid};

use super::args::ShimArgs;
use super::error::{error_chain, start_error_code, IoFailure};
use super::executor::{reset_signals, ShimExecutor};
use crate::protocol::{ExecSpec, ShimErrorKind};

/// Why an exec's process did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The request cannot be run as given (no command, a bad working directory or user).
    #[error("{0}")]
    BadRequest(String),
    /// The container's config.json cannot serve as the exec's template.
    #[error("{}: {problem}", path.display())]
    Config { path: PathBuf, problem: String },
    #[error(transparent)]
    Io(#[from] IoFailure),
    /// The runtime could not start the process: libcontainer's error chain, which crossed
    /// the helper's pipe as text.
    #[error("{0}")]
    Runtime(String),
}

impl ExecError {
    /// The kind the client gets with this error.
    pub(crate) fn kind(&self) -> ShimErrorKind {
        match self {
            ExecError::BadRequest(_) => ShimErrorKind::BadRequest,
            _ => ShimErrorKind::ExecFailed,
        }
    }

    /// Docker's status for an exec whose command could not run (127 not found, 126 not
    /// executable); `None` for other failures.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self {
            ExecError::Runtime(message) => start_error_code(message),
            _ => None,
        }
    }
}

pub(crate) struct ExecPipes {
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: Option<OwnedFd>,
}

fn merge_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split_once('=').map(|(k, _)| k).unwrap_or(entry);
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
    {
        Some(e) => *e = entry.to_string(),
        None => env.push(entry.to_string()),
    }
}

/// Writes the exec's process.json next to config.json; returns its path.
fn write_process(
    args: &ShimArgs,
    container: &Container,
    spec: &ExecSpec,
    seq: u64,
) -> Result<PathBuf, ExecError> {
    if spec.args.is_empty() {
        return Err(ExecError::BadRequest("exec needs a command".into()));
    }
    crate::bundle::validate::exec_spec(spec).map_err(|e| ExecError::BadRequest(e.to_string()))?;
    let config = args.bundle.join("config.json");
    let oci = Spec::load(&config).map_err(|e| ExecError::Config {
        path: config.clone(),
        problem: e.to_string(),
    })?;
    let mut process = oci.process().clone().ok_or_else(|| ExecError::Config {
        path: config.clone(),
        problem: "the container's config.json has no process".into(),
    })?;
    process.set_args(Some(spec.args.clone()));
    process.set_terminal(Some(false));
    let mut env = process.env().clone().unwrap_or_default();
    for e in &spec.env {
        merge_env(&mut env, e);
    }
    if let Some(u) = &spec.user {
        let root = oci
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        let root = if root.is_absolute() {
            root
        } else {
            args.bundle.join(root)
        };
        let r = crate::bundle::resolve_user(&root, u)
            .map_err(|e| ExecError::BadRequest(e.to_string()))?;
        let user = UserBuilder::default()
            .uid(r.uid)
            .gid(r.gid)
            .additional_gids(r.additional_gids)
            .build()
            .map_err(|e| ExecError::Runtime(e.to_string()))?;
        process.set_user(user);
        merge_env(&mut env, &format!("HOME={}", r.home));
    }
    process.set_env(Some(env));
    if let Some(cwd) = &spec.cwd {
        if !cwd.starts_with('/') {
            return Err(ExecError::BadRequest(format!(
                "working directory {cwd:?} is not an absolute path"
            )));
        }
        check_exec_cwd(container, cwd)?;
        process.set_cwd(PathBuf::from(cwd));
    }
    let path = args
        .bundle
        .join(format!("exec-{}-{seq}.json", std::process::id()));
    let data = serde_json::to_vec(&process).map_err(|e| ExecError::Runtime(e.to_string()))?;
    // 0600: the process spec carries the container's environment.
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&data))
            .map_err(|e| IoFailure::new(path.display().to_string(), e))?;
    }
    Ok(path)
}

/// `exec -w DIR`: DIR must be a directory in the container's view (its init's root, so
/// volumes count), else the runtime's chdir fails with a bare errno.
fn check_exec_cwd(container: &Container, cwd: &str) -> Result<(), ExecError> {
    let Some(pid) = container.pid() else {
        return Ok(());
    };
    let root = PathBuf::from(format!("/proc/{}/root", pid.as_raw()));
    match crate::safe_path::metadata_in_root(&root, Path::new(cwd)) {
        Ok(Some(m)) if m.is_dir() => Ok(()),
        Ok(Some(m)) => Err(ExecError::BadRequest(format!(
            "working directory {cwd} is not a directory in the container (it is {})",
            crate::safe_path::describe_type(&m)
        ))),
        Ok(None) => Err(ExecError::BadRequest(format!(
            "working directory {cwd}: no such directory in the container"
        ))),
        // The container's root is not reachable (e.g. it is exiting): let the runtime decide.
        Err(_) => Ok(()),
    }
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn start_exec(
    args: &ShimArgs,
    container: &Container,
    spec: &ExecSpec,
) -> Result<ExecPipes, ExecError> {
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let process_path = write_process(args, container, spec, seq)?;
    let res = spawn_tenant(args, &process_path, spec.stdin);
    let _ = std::fs::remove_file(&process_path);
    res
}

fn spawn_tenant(
    args: &ShimArgs,
    process_path: &Path,
    want_stdin: bool,
) -> Result<ExecPipes, ExecError> {
    let p = || pipe2(OFlag::O_CLOEXEC).map_err(|e| IoFailure::new("pipe", e));
    let (out_r, out_w) = p()?;
    let (err_r, err_w) = p()?;
    let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if want_stdin {
        let (r, w) = p()?;
        (r, Some(w))
    } else {
        (
            File::open("/dev/null")
                .map_err(|e| IoFailure::new("/dev/null", e))?
                .into(),
            None,
        )
    };
    let (res_r, res_w) = p()?;

    // SAFETY: the shim is single-threaded, so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(|e| IoFailure::new("fork", e))? {
        ForkResult::Child => {
            drop(res_r);
            drop(stdin_w);
            drop(out_r);
            drop(err_r);
            reset_signals();
            // The same filter as the container's init (config.json no longer carries
            // it), prepared here in the throwaway child so the shim's heap stays small.
            let msg = match super::seccomp_bpf::prepare(&args.bundle, &args.state) {
                Err(e) => format!("err seccomp: {e}"),
                Ok(seccomp) => {
                    let executor = ShimExecutor {
                        seccomp: seccomp.map(std::rc::Rc::new),
                    };
                    let result = ContainerBuilder::new(args.id.clone(), SyscallType::default())
                        .with_executor(executor)
                        .with_root_path(args.runtime_root())
                        .map(|b| {
                            b.with_stdin(stdin_r)
                                .with_stdout(out_w)
                                .with_stderr(err_w)
                                .as_tenant()
                                .with_detach(true)
                                .with_process(Some(process_path))
                                .build()
                        });
                    match result {
                        Ok(Ok(pid)) => format!("ok {}", pid.as_raw()),
                        Ok(Err(e)) => format!("err {}", error_chain(&e)),
                        Err(e) => format!("err {}", error_chain(&e)),
                    }
                }
            };
            let mut w = File::from(res_w);
            let _ = w.write_all(msg.as_bytes());
            drop(w);
            // SAFETY: leave the forked child without running the shim's exit paths.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(res_w);
            drop(stdin_r);
            drop(out_w);
            drop(err_w);
            let mut s = String::new();
            let _ = File::from(res_r).read_to_string(&mut s);
            let _ = waitpid(child, None);
            if let Some(pid) = s.strip_prefix("ok ") {
                let pid: i32 = pid
                    .trim()
                    .parse()
                    .map_err(|_| ExecError::Runtime(format!("exec helper reported {s:?}")))?;
                Ok(ExecPipes {
                    pid: Pid::from_raw(pid),
                    stdout: out_r,
                    stderr: err_r,
                    stdin: stdin_w,
                })
            } else if let Some(err) = s.strip_prefix("err ") {
                Err(ExecError::Runtime(err.to_string()))
            } else {
                Err(ExecError::Runtime(
                    "the exec helper died without reporting".into(),
                ))
            }
        }
    }
}

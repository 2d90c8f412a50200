//! Starting the container inside the detached shim, and reporting the outcome.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use chrono::Utc;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::unistd::{dup2, pipe2};

use super::executor::ShimExecutor;
use super::server::{InitIo, Server};
use super::{ShimArgs, StartReport};
use crate::exit::{write_exit_record, ExitRecord};

fn report(w: OwnedFd, r: &StartReport) {
    let mut f = File::from(w);
    let _ = f.write_all(&crate::protocol::line(r));
    // dropping `f` closes the pipe: the spawner-facing process then exits
}

/// Maps a libcontainer start error to docker's exit status: 127 when the command was
/// not found, 126 when it is not executable.
pub(crate) fn start_error_code(msg: &str) -> Option<i32> {
    let exec_failed = msg.contains("executing") || msg.contains("execvp");
    if msg.contains("not found in $PATH") || (exec_failed && msg.contains("ENOENT")) {
        Some(127)
    } else if msg.contains("does not have correct permissions")
        || (exec_failed && msg.contains("EACCES"))
    {
        Some(126)
    } else {
        None
    }
}

/// Full chain of an error, so "failed to create container" comes with its cause.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn redirect_stdio(args: &ShimArgs) {
    if let Ok(null) = File::open("/dev/null") {
        let _ = dup2(null.as_raw_fd(), 0);
        let _ = dup2(null.as_raw_fd(), 1);
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.bundle.join("shim.log"))
        .or_else(|_| OpenOptions::new().write(true).open("/dev/null"));
    if let Ok(log) = log {
        let _ = dup2(log.as_raw_fd(), 2);
    }
}

/// Body of the detached shim. Returns its exit status.
pub(crate) fn run(args: ShimArgs, report_w: OwnedFd) -> i32 {
    let _ = nix::unistd::setsid();
    redirect_stdio(&args);
    // libcontainer explains failures only through `tracing`: send its errors to
    // shim.log through a descriptor of our own. Not to fd 2: the container's init is a
    // fork of this process and logs after switching fd 2 to the container's stderr,
    // which would put runtime messages into the container's log.
    // ZLAYER_SHIM_LOG overrides the level (e.g. `debug`).
    if let Ok(f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.bundle.join("shim.log"))
    {
        // A plain level, not an EnvFilter: its compiled directives would stay resident
        // in every idle shim.
        let level = std::env::var("ZLAYER_SHIM_LOG")
            .ok()
            .and_then(|l| l.parse::<tracing::Level>().ok())
            .unwrap_or(tracing::Level::ERROR);
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Arc::new(f))
            .with_ansi(false)
            .with_max_level(level)
            .try_init();
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let fail = |w: OwnedFd, error: String, exit_code: Option<i32>| {
        shim_log!("zlayer-agent shim {}: start failed: {error}", args.id);
        report(
            w,
            &StartReport {
                ok: false,
                pid: None,
                shim_pid: None,
                started_at: None,
                error: Some(error),
                exit_code,
            },
        );
        1
    };

    // The socket first: a second shim for the same id must fail before touching anything.
    let sock = args.socket_path();
    let listener = match bind_socket(&sock) {
        Ok(l) => l,
        Err(e) => return fail(report_w, e, None),
    };
    let remove_sock = || {
        let _ = fs::remove_file(&sock);
    };

    match start_container(&args) {
        Ok((container, io)) => {
            let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
            let started_at = Utc::now();
            report(
                report_w,
                &StartReport {
                    ok: true,
                    pid: Some(pid),
                    shim_pid: Some(std::process::id() as i32),
                    started_at: Some(started_at),
                    error: None,
                    exit_code: None,
                },
            );
            let server = Server::new(args, listener, container, io, started_at);
            server.run()
        }
        Err(StartFailure { message, exit_code }) => {
            remove_sock();
            let message = with_log_details(&args, message);
            if let Some(code) = exit_code {
                // docker keeps the 127/126 of a command that could not run; so do we.
                let now = Utc::now();
                let _ = write_exit_record(
                    &args.bundle,
                    &ExitRecord {
                        exit_code: code,
                        signal: None,
                        oom_killed: false,
                        pid: None,
                        started_at: None,
                        finished_at: now,
                        error: Some(message.clone()),
                    },
                );
            }
            fail(report_w, message, exit_code)
        }
    }
}

/// libcontainer's error values are often generic ("failed to prepare rootfs"); the
/// specific cause was logged through tracing into shim.log. Append those lines.
fn with_log_details(args: &ShimArgs, message: String) -> String {
    let log = fs::read_to_string(args.bundle.join("shim.log")).unwrap_or_default();
    let details: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(|l| l.split_once("ERROR").map(|(_, r)| r.trim()).unwrap_or(l))
        .collect();
    let tail = &details[details.len().saturating_sub(4)..];
    if tail.is_empty() {
        message
    } else {
        format!("{message} (details: {})", tail.join("; "))
    }
}

fn bind_socket(sock: &std::path::Path) -> Result<UnixListener, String> {
    if let Some(dir) = sock.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    if sock.exists() {
        // A live shim answers; a stale file from a crashed one may be replaced.
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Err(format!(
                "a shim is already serving {} (container exists)",
                sock.display()
            ));
        }
        let _ = fs::remove_file(sock);
    }
    let l = UnixListener::bind(sock).map_err(|e| format!("binding {}: {e}", sock.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("socket {}: {e}", sock.display()))?;
    Ok(l)
}

fn copy_pending(fd: &OwnedFd) {
    use std::io::Read;
    let _ = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    );
    let mut buf = vec![0u8; 64 * 1024];
    if let Ok(dup) = fd.try_clone() {
        let mut f = File::from(dup);
        if let Ok(n) = f.read(&mut buf) {
            let _ = std::io::stderr().write_all(&buf[..n]);
        }
    }
}

/// Docker's `--network none` container still has a working loopback; a fresh network
/// namespace starts with `lo` down. Bring it up before the workload runs. Namespaces
/// given by path (CNI) are the network plugin's business.
/// On cgroup v2, attaches our device filter to the container's cgroup before its process
/// runs (libcontainer applies none there, see [`crate::device_filter`]). v1 hosts get the
/// same rules from libcontainer's devices controller.
fn device_filter_if_v2(args: &ShimArgs, container: &Container) -> Result<(), String> {
    use libcontainer::oci_spec::runtime::Spec;
    if !crate::cgroups::is_v2() {
        return Ok(());
    }
    let config = args.bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("reading {}: {e}", config.display()))?;
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    let rules = crate::device_filter::rules_for(&devices);
    if crate::device_filter::allows_everything(&rules) {
        return Ok(());
    }
    let cgroup_path = container
        .spec()
        .map_err(|e| format!("reading the container's state: {e}"))?
        .cgroup_path;
    let dir = crate::cgroups::ContainerCgroup::new(&cgroup_path.to_string_lossy())
        .dir("")
        .ok_or("no cgroup v2 directory")?;
    crate::device_filter::attach(&dir, &rules).map_err(|e| e.to_string())
}

fn loopback_if_private_netns(args: &ShimArgs, container: &Container) -> Result<(), String> {
    use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
    let spec = Spec::load(args.bundle.join("config.json")).map_err(|e| e.to_string())?;
    let private = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none())
        });
    let Some(pid) = container.pid() else {
        return Ok(());
    };
    if !private {
        return Ok(());
    }
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("opening the container's network namespace: {e}"))?;
    // setns changes the calling thread's namespace: do it in a throwaway child.
    // SAFETY: the shim is single-threaded; the child only makes syscalls and _exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let ok =
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).is_ok() && set_lo_up();
            // SAFETY: leaving the forked child without running the shim's exit paths.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            other => Err(format!(
                "bringing up loopback in the container failed ({other:?})"
            )),
        },
    }
}

fn set_lo_up() -> bool {
    // SAFETY: plain socket/ioctl calls on a zero-initialised ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0;
        if ok {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ok = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) == 0;
        }
        libc::close(fd);
        ok
    }
}

/// Waits at the start gate ([`super::START_GATE_FD`]). The spawner lets the shim create the
/// container (the slow part: libcontainer's clone, mounts, cgroups) while it still attaches
/// the container's network namespace (CNI ADD), and writes one line when that succeeded: `go`,
/// or `go IP` with the container's address, which is added to the container's /etc/hosts (it
/// was not known when the bundle was written). Anything else, or EOF (the attachment failed,
/// the spawner died), cancels the start: the container process never runs.
fn pass_start_gate(args: &ShimArgs) -> Result<(), String> {
    use std::io::{BufRead, Read};
    use std::os::fd::FromRawFd;
    // SAFETY: main() kept START_GATE_FD open for exactly this read; nothing else owns it,
    // and the File closes it when dropped.
    let gate = unsafe { File::from_raw_fd(super::START_GATE_FD) };
    let mut line = String::new();
    std::io::BufReader::new(gate.take(512))
        .read_line(&mut line)
        .map_err(|e| format!("reading the start gate: {e}"))?;
    let mut words = line.split_whitespace();
    if words.next() != Some("go") {
        return Err(if line.trim().is_empty() {
            "start cancelled: the daemon closed the start gate (network attachment failed or the daemon went away)".to_string()
        } else {
            format!("start cancelled by the daemon: {}", line.trim())
        });
    }
    if let Some(ip) = words.next() {
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("start gate: {ip:?} is not an IP address"))?;
        let hosts = args.bundle.join(crate::bundle::HOSTS_FILE);
        let hostname = fs::read_to_string(args.bundle.join(crate::bundle::HOSTNAME_FILE))
            .map_err(|e| format!("reading the container's hostname file: {e}"))?;
        // Appended in place: the file is already bind-mounted into the container by inode.
        OpenOptions::new()
            .append(true)
            .open(&hosts)
            .and_then(|mut f| f.write_all(format!("{ip}\t{}\n", hostname.trim()).as_bytes()))
            .map_err(|e| format!("adding the container's address to {}: {e}", hosts.display()))?;
    }
    Ok(())
}

struct StartFailure {
    message: String,
    exit_code: Option<i32>,
}

fn start_container(args: &ShimArgs) -> Result<(Container, InitIo), StartFailure> {
    let plain = |message: String| StartFailure {
        message,
        exit_code: None,
    };
    let config = args.bundle.join("config.json");
    if !config.is_file() {
        return Err(plain(format!("{} does not exist", config.display())));
    }
    let root = args.runtime_root();
    fs::create_dir_all(&root).map_err(|e| plain(format!("creating {}: {e}", root.display())))?;

    let p = || pipe2(OFlag::O_CLOEXEC).map_err(|e| plain(format!("pipe: {e}")));
    let (out_r, out_w) = p()?;
    let (err_r, err_w) = p()?;
    let (stdin_r, stdin_w): (OwnedFd, Option<OwnedFd>) = if args.stdin {
        let (r, w) = p()?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").map_err(|e| plain(format!("/dev/null: {e}")))?;
        (null.into(), None)
    };

    // Before libcontainer reads config.json: takes the seccomp profile out of it.
    let seccomp = super::seccomp_bpf::prepare_in_child(&args.bundle, &args.state)
        .map_err(|e| plain(format!("seccomp: {e}")))?;
    let builder = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_executor(ShimExecutor {
            seccomp: seccomp.map(std::rc::Rc::new),
        })
        .with_root_path(&root)
        .and_then(|b| b.validate_id())
        .map_err(|e| plain(error_chain(&e)))?
        .with_stdin(stdin_r)
        .with_stdout(out_w)
        .with_stderr(err_w);
    let built = builder
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    let mut container = built.map_err(|e| {
        // The init process logs its error after switching its stderr to the pipe:
        // move that into shim.log, where with_log_details finds it.
        copy_pending(&err_r);
        copy_pending(&out_r);
        let message = error_chain(&e);
        let exit_code = start_error_code(&message);
        // libcontainer removed its own cgroup and state after a failed create; make
        // sure of the state directory (e.g. when validation failed before that).
        let _ = fs::remove_dir_all(root.join(&args.id));
        StartFailure { message, exit_code }
    })?;
    if let Err(message) = loopback_if_private_netns(args, &container) {
        let _ = container.delete(true);
        let _ = fs::remove_dir_all(root.join(&args.id));
        return Err(StartFailure {
            message,
            exit_code: None,
        });
    }
    if let Err(message) = device_filter_if_v2(args, &container) {
        let _ = container.delete(true);
        let _ = fs::remove_dir_all(root.join(&args.id));
        return Err(StartFailure {
            message,
            exit_code: None,
        });
    }
    if args.start_gate {
        if let Err(message) = pass_start_gate(args) {
            let _ = container.delete(true);
            let _ = fs::remove_dir_all(root.join(&args.id));
            return Err(StartFailure {
                message,
                exit_code: None,
            });
        }
    }
    if let Err(e) = container.start() {
        let message = error_chain(&e);
        let _ = container.delete(true);
        let _ = fs::remove_dir_all(root.join(&args.id));
        return Err(StartFailure {
            exit_code: start_error_code(&message),
            message,
        });
    }
    Ok((
        container,
        InitIo {
            stdout: out_r,
            stderr: err_r,
            stdin: stdin_w,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::start_error_code;

    #[test]
    fn docker_exit_codes_for_start_errors() {
        assert_eq!(
            start_error_code("error in executing process : executable 'x' not found in $PATH"),
            Some(127)
        );
        assert_eq!(
            start_error_code("executable 'x' at path '/x' does not have correct permissions"),
            Some(126)
        );
        // an unrelated missing file is not "command not found"
        assert_eq!(
            start_error_code("oci spec error: io operation failed: No such file or directory"),
            None
        );
    }
}

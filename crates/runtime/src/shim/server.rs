//! The shim's single-threaded event loop: `poll(2)` over the container's output pipes,
//! a signalfd for SIGCHLD, the listening socket and client connections.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use libcontainer::container::Container;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::ShimArgs;
use crate::atomic::Reservation;
use crate::cgroups::ContainerCgroup;
use crate::exit::{publish_exit_record, publish_reserved_exit_record, ExitRecord};
use crate::logs::{CriLogWriter, LogLoss};
use crate::protocol::{
    decode_data, encode_data, line, ContainerState, Event, Request, Stream, StreamInput,
};

/// How long to wait for output pipes to drain after a process exited: a background
/// child that inherited them must not keep an exec (or the shim) alive forever.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// A connection that does not read its stream is dropped beyond this much backlog
/// (attach) or stops the process's output (exec) — the log never waits for clients.
const MAX_BACKLOG: usize = 8 << 20;
const EXEC_BACKPRESSURE: usize = 1 << 20;
/// Bytes read from an output pipe at once: small, because every page of buffer is
/// resident in every idle shim; a busy container just costs a few more reads.
const READ_CHUNK: usize = 8 * 1024;

/// The container init's stdio, owned by the shim.
pub(crate) struct InitIo {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: Option<OwnedFd>,
}

/// A pipe we read output from.
struct OutPipe {
    fd: Option<File>,
    stream: Stream,
}

/// Buffered, non-blocking writes into a process's stdin.
struct StdinSink {
    fd: Option<File>,
    buf: Vec<u8>,
    close_when_drained: bool,
}

impl StdinSink {
    fn new(fd: OwnedFd) -> Self {
        let _ = set_nonblocking(fd.as_raw_fd());
        StdinSink {
            fd: Some(File::from(fd)),
            buf: Vec::new(),
            close_when_drained: false,
        }
    }

    fn flush(&mut self) {
        let Some(f) = self.fd.as_mut() else {
            self.buf.clear();
            return;
        };
        while !self.buf.is_empty() {
            match f.write(&self.buf) {
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // reader gone (EPIPE): nothing more can be delivered
                    self.buf.clear();
                    self.fd = None;
                    return;
                }
            }
        }
        if self.close_when_drained {
            self.fd = None;
        }
    }
}

struct ExecProc {
    pid: Pid,
    out: [OutPipe; 2],
    stdin: Option<StdinSink>,
    conn: Option<u64>,
    status: Option<(i32, Option<i32>)>,
    exited_at: Option<Instant>,
}

#[derive(PartialEq)]
enum Role {
    New,
    Waiter,
    Exec(u64),
    Attach { stdin: bool },
}

struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    role: Role,
    close_after_flush: bool,
    dead: bool,
}

impl Conn {
    fn send(&mut self, ev: &Event) {
        if self.dead {
            return;
        }
        self.wbuf.extend_from_slice(&line(ev));
        if self.wbuf.len() > MAX_BACKLOG {
            self.dead = true;
        }
    }

    fn flush(&mut self) {
        while !self.wbuf.is_empty() && !self.dead {
            match self.stream.write(&self.wbuf) {
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
        if self.wbuf.is_empty() && self.close_after_flush {
            self.dead = true;
        }
    }
}

/// Gives back the stack pages libcontainer's deep call chains touched during start-up:
/// everything below the current frame (minus a margin) is unused from here on, and an
/// idle shim should not keep them. The kernel maps fresh zero pages if they are needed.
fn release_unused_stack() {
    const MARGIN: usize = 16 * 1024;
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(start) = maps.lines().find(|l| l.ends_with("[stack]")).and_then(|l| {
        let (range, _) = l.split_once(' ')?;
        let (a, _) = range.split_once('-')?;
        usize::from_str_radix(a, 16).ok()
    }) else {
        return;
    };
    let page = 4096;
    let end = sp.saturating_sub(MARGIN) & !(page - 1);
    if end > start {
        // SAFETY: [start, end) lies below the live part of this thread's stack (the
        // stack grows down and `end` is 16 KiB below the current frame); no signal
        // handler runs on it (signals go through a signalfd). MADV_DONTNEED on private
        // anonymous memory only drops the pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// Our direct children, from /proc (the `children` files of every thread).
///
/// An empty `children` file is an answer ("no children"), not a reason to look elsewhere:
/// the full scan of every process's `stat` below costs tens of milliseconds on a busy host
/// and ran on every loop of a shim whose container had exited. It is only for kernels
/// built without CONFIG_PROC_CHILDREN, where the file does not exist.
fn child_pids() -> Vec<i32> {
    let me = std::process::id();
    let mut v = Vec::new();
    let mut have_children_files = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                have_children_files = true;
                v.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if have_children_files {
        return v;
    }
    // Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) {
                // ppid is the 2nd field after the parenthesised command name
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u32>().ok())
                        == Some(me)
                    {
                        v.push(pid);
                    }
                }
            }
        }
    }
    v
}

fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map(|_| ())
}

fn wait_status(ws: WaitStatus) -> Option<(i32, Option<i32>)> {
    match ws {
        WaitStatus::Exited(_, c) => Some(ExitRecord::from_status(Some(c), None)),
        WaitStatus::Signaled(_, s, _) => Some(ExitRecord::from_status(None, Some(s as i32))),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Token {
    Signal,
    Listener,
    InitOut(usize),
    InitStdin,
    ExecOut(u64, usize),
    ExecStdin(u64),
    Conn(u64),
}

pub(crate) struct Server {
    args: ShimArgs,
    listener: UnixListener,
    container: Container,
    init_pid: Pid,
    started_at: DateTime<Utc>,
    init_out: [OutPipe; 2],
    init_stdin: Option<StdinSink>,
    stdin_attached: bool,
    log: Option<CriLogWriter>,
    /// Output lost while there was no log writer at all (the log could not be opened).
    unlogged: LogLoss,
    /// The last log write failed: the next success is worth a line in shim.log.
    log_failing: bool,
    /// Space for the exit record, set aside at start (see `exit::reserve_exit_record`).
    exit_reservation: Option<Reservation>,
    /// Space for the record of lost output (see `logs::reserve_log_loss`).
    log_loss_reservation: Option<Reservation>,
    init_status: Option<(i32, Option<i32>)>,
    init_exited_at: Option<Instant>,
    execs: BTreeMap<u64, ExecProc>,
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    sigfd: Option<SignalFd>,
    cgroup: Option<ContainerCgroup>,
}

impl Server {
    pub(crate) fn new(
        args: ShimArgs,
        listener: UnixListener,
        container: Container,
        io: InitIo,
        started_at: DateTime<Utc>,
    ) -> Self {
        let init_pid = container.pid().unwrap_or(Pid::from_raw(0));
        for fd in [&io.stdout, &io.stderr] {
            let _ = set_nonblocking(fd.as_raw_fd());
        }
        let log = match CriLogWriter::open(&args.bundle, args.log_max_size, args.log_max_files) {
            Ok(l) => Some(l),
            Err(e) => {
                shim_log!("zlayer-agent shim {}: cannot open log: {e}", args.id);
                None
            }
        };
        let exit_reservation = match crate::exit::reserve_exit_record(&args.bundle) {
            Ok(r) => Some(r),
            Err(e) => {
                shim_log!(
                    "zlayer-agent shim {}: reserving the exit record: {e}",
                    args.id
                );
                None
            }
        };
        let log_loss_reservation = match crate::logs::reserve_log_loss(&args.bundle) {
            Ok(r) => Some(r),
            Err(e) => {
                shim_log!(
                    "zlayer-agent shim {}: reserving the log loss record: {e}",
                    args.id
                );
                None
            }
        };
        let cgroup = container
            .spec()
            .ok()
            .and_then(|c| c.cgroup_path.to_str().map(ContainerCgroup::new));
        Server {
            init_out: [
                OutPipe {
                    fd: Some(File::from(io.stdout)),
                    stream: Stream::Stdout,
                },
                OutPipe {
                    fd: Some(File::from(io.stderr)),
                    stream: Stream::Stderr,
                },
            ],
            init_stdin: io.stdin.map(StdinSink::new),
            stdin_attached: false,
            listener,
            container,
            init_pid,
            started_at,
            log,
            unlogged: LogLoss::default(),
            log_failing: false,
            exit_reservation,
            log_loss_reservation,
            init_status: None,
            init_exited_at: None,
            execs: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_id: 1,
            sigfd: None,
            cgroup,
            args,
        }
    }

    /// Runs until the container has exited and everything is recorded.
    pub(crate) fn run(mut self) -> i32 {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        // The shim must outlive a daemon shutdown or a terminal hang-up.
        for s in [
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGPIPE,
        ] {
            // SAFETY: SIG_IGN installs no handler code.
            unsafe {
                let _ = nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigIgn);
            }
        }
        if mask.thread_block().is_ok() {
            self.sigfd =
                SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).ok();
        }
        // The start-up allocations (spec, seccomp profile, libcontainer state) are dead
        // now; hand the pages back so 50 idle shims stay small.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
        release_unused_stack();
        self.reap();

        loop {
            if self.init_done() {
                break;
            }
            self.poll_once();
        }
        self.finish()
    }

    fn init_done(&self) -> bool {
        let Some(at) = self.init_exited_at else {
            return false;
        };
        self.init_out.iter().all(|p| p.fd.is_none()) || at.elapsed() > DRAIN_GRACE * 4
    }

    fn poll_once(&mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut toks: Vec<Token> = Vec::new();
        let mut add = |fd: RawFd, ev: i16, t: Token, fds: &mut Vec<libc::pollfd>| {
            fds.push(libc::pollfd {
                fd,
                events: ev,
                revents: 0,
            });
            toks.push(t);
        };
        if let Some(s) = &self.sigfd {
            add(s.as_fd().as_raw_fd(), libc::POLLIN, Token::Signal, &mut fds);
        }
        add(
            self.listener.as_raw_fd(),
            libc::POLLIN,
            Token::Listener,
            &mut fds,
        );
        for (i, p) in self.init_out.iter().enumerate() {
            if let Some(f) = &p.fd {
                add(f.as_raw_fd(), libc::POLLIN, Token::InitOut(i), &mut fds);
            }
        }
        if let Some(s) = &self.init_stdin {
            if let (Some(f), false) = (&s.fd, s.buf.is_empty()) {
                add(f.as_raw_fd(), libc::POLLOUT, Token::InitStdin, &mut fds);
            }
        }
        for (id, e) in &self.execs {
            let conn_backlog = e
                .conn
                .and_then(|c| self.conns.get(&c))
                .map(|c| c.wbuf.len())
                .unwrap_or(0);
            if conn_backlog < EXEC_BACKPRESSURE {
                for (i, p) in e.out.iter().enumerate() {
                    if let Some(f) = &p.fd {
                        add(
                            f.as_raw_fd(),
                            libc::POLLIN,
                            Token::ExecOut(*id, i),
                            &mut fds,
                        );
                    }
                }
            }
            if let Some(s) = &e.stdin {
                if let (Some(f), false) = (&s.fd, s.buf.is_empty()) {
                    add(
                        f.as_raw_fd(),
                        libc::POLLOUT,
                        Token::ExecStdin(*id),
                        &mut fds,
                    );
                }
            }
        }
        for (id, c) in &self.conns {
            let mut ev = 0;
            let stdin_full = match &c.role {
                Role::Exec(e) => self
                    .execs
                    .get(e)
                    .and_then(|e| e.stdin.as_ref())
                    .is_some_and(|s| s.buf.len() > EXEC_BACKPRESSURE),
                Role::Attach { stdin: true } => self
                    .init_stdin
                    .as_ref()
                    .is_some_and(|s| s.buf.len() > EXEC_BACKPRESSURE),
                _ => false,
            };
            if !stdin_full {
                ev |= libc::POLLIN;
            }
            if !c.wbuf.is_empty() {
                ev |= libc::POLLOUT;
            }
            add(c.stream.as_raw_fd(), ev, Token::Conn(*id), &mut fds);
        }

        // Wake up regularly while something waits for a drain deadline.
        let timeout = if self.init_exited_at.is_some()
            || self.execs.values().any(|e| e.exited_at.is_some())
        {
            100
        } else {
            1000
        };
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            return; // EINTR
        }
        for (pfd, tok) in fds.iter().zip(toks) {
            if pfd.revents == 0 {
                continue;
            }
            match tok {
                Token::Signal => {
                    if let Some(s) = &mut self.sigfd {
                        while let Ok(Some(_)) = s.read_signal() {}
                    }
                    self.reap();
                }
                Token::Listener => self.accept(),
                Token::InitOut(i) => self.read_init(i),
                Token::InitStdin => {
                    if let Some(s) = &mut self.init_stdin {
                        s.flush();
                    }
                }
                Token::ExecOut(id, i) => self.read_exec(id, i),
                Token::ExecStdin(id) => {
                    if let Some(s) = self.execs.get_mut(&id).and_then(|e| e.stdin.as_mut()) {
                        s.flush();
                    }
                }
                Token::Conn(id) => {
                    if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                        self.read_conn(id);
                    }
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.flush();
                    }
                }
            }
        }
        // Periodic: catch exits whose SIGCHLD coalesced, finish drained execs, drop dead conns.
        self.reap();
        self.finish_execs();
        let dead: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dead)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.drop_conn(id);
        }
    }

    /// waitpid on exactly the pids we own: init, exec processes, inherited orphans.
    fn reap(&mut self) {
        self.reap_strays();
        if self.init_status.is_none() {
            if let Ok(ws) = waitpid(self.init_pid, Some(WaitPidFlag::WNOHANG)) {
                if let Some(st) = wait_status(ws) {
                    self.init_status = Some(st);
                    self.init_exited_at = Some(Instant::now());
                }
            }
        }
        for e in self.execs.values_mut() {
            if e.status.is_none() {
                match waitpid(e.pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(ws) => {
                        if let Some(st) = wait_status(ws) {
                            e.status = Some(st);
                            e.exited_at = Some(Instant::now());
                        }
                    }
                    Err(nix::errno::Errno::ECHILD) => {
                        // Not ours (should not happen): do not wait forever.
                        e.status = Some((255, None));
                        e.exited_at = Some(Instant::now());
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Reaps children we do not track: as child subreaper the shim inherits the
    /// processes a failed libcontainer exec leaves behind (its intermediate process and
    /// the half-started process, which lives in the container's pid namespace: until it
    /// is reaped the container's init cannot finish exiting). Each is waited for by its
    /// own pid, never with waitpid(-1), and only here, never while libcontainer runs.
    fn reap_strays(&mut self) {
        for pid in child_pids() {
            let tracked =
                pid == self.init_pid.as_raw() || self.execs.values().any(|e| e.pid.as_raw() == pid);
            if !tracked {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(true);
                    let id = self.next_id;
                    self.next_id += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            stream,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            role: Role::New,
                            close_after_flush: false,
                            dead: false,
                        },
                    );
                }
                Err(_) => return,
            }
        }
    }

    fn read_pipe(p: &mut OutPipe, buf: &mut [u8]) -> Option<usize> {
        let f = p.fd.as_mut()?;
        match f.read(buf) {
            Ok(0) => {
                p.fd = None;
                None
            }
            Ok(n) => Some(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                None
            }
            Err(_) => {
                p.fd = None;
                None
            }
        }
    }

    fn read_init(&mut self, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let Some(n) = Self::read_pipe(&mut self.init_out[i], &mut buf) else {
            return;
        };
        let stream = self.init_out[i].stream;
        self.log_output(stream, &buf[..n]);
        let ev = Event::Output {
            stream,
            data: encode_data(&buf[..n]),
        };
        for c in self.conns.values_mut() {
            if matches!(c.role, Role::Attach { .. }) {
                c.send(&ev);
            }
        }
    }

    /// Appends output to the log. A failed write (a full disk) loses that output, counted
    /// (see [`Self::log_loss`]) and noted in shim.log once per streak of failures; the
    /// container keeps running and being supervised, and later output is tried again.
    fn log_output(&mut self, stream: Stream, data: &[u8]) {
        let res = match &mut self.log {
            Some(log) => log.write_chunk(stream, data),
            None => {
                self.unlogged.dropped_bytes += data.len() as u64;
                self.unlogged.failed_writes += 1;
                return;
            }
        };
        match res {
            Ok(()) if self.log_failing => {
                self.log_failing = false;
                let lost = self.log_loss().dropped_bytes;
                shim_log!(
                    "zlayer-agent shim {}: writing the log works again ({lost} bytes of output lost)",
                    self.args.id
                );
            }
            Ok(()) => {}
            Err(e) if !self.log_failing => {
                self.log_failing = true;
                shim_log!(
                    "zlayer-agent shim {}: writing log: {e} (output is dropped and counted until writes succeed)",
                    self.args.id
                );
            }
            Err(_) => {}
        }
    }

    /// Everything that could not be logged so far.
    fn log_loss(&self) -> LogLoss {
        let mut loss = self.unlogged.clone();
        if let Some(l) = self.log.as_ref().map(CriLogWriter::loss) {
            loss.dropped_bytes += l.dropped_bytes;
            loss.failed_writes += l.failed_writes;
            loss.last_error = l.last_error.clone();
        }
        if self.log.is_none() && loss.dropped_bytes > 0 {
            loss.last_error = Some("the log file could not be opened (see shim.log)".into());
        }
        loss
    }

    fn read_exec(&mut self, id: u64, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let Some(e) = self.execs.get_mut(&id) else {
            return;
        };
        let Some(n) = Self::read_pipe(&mut e.out[i], &mut buf) else {
            return;
        };
        let ev = Event::Output {
            stream: e.out[i].stream,
            data: encode_data(&buf[..n]),
        };
        if let Some(c) = e.conn.and_then(|c| self.conns.get_mut(&c)) {
            c.send(&ev);
        }
    }

    fn read_conn(&mut self, id: u64) {
        let mut buf = [0u8; 4096];
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let eof = loop {
            match c.stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    c.rbuf.extend_from_slice(&buf[..n]);
                    if c.rbuf.len() > MAX_BACKLOG {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        while let Some(pos) = self
            .conns
            .get(&id)
            .and_then(|c| c.rbuf.iter().position(|&b| b == b'\n'))
        {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let l: Vec<u8> = c.rbuf.drain(..=pos).collect();
            self.handle_line(id, &l[..l.len() - 1]);
        }
        if eof {
            self.client_hung_up(id);
        }
    }

    fn client_hung_up(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match c.role {
            // The client is gone but its process keeps running, like `docker exec` whose
            // client died. Its stdin gets EOF so it does not wait for input forever.
            Role::Exec(e) => {
                if let Some(s) = self.execs.get_mut(&e).and_then(|e| e.stdin.as_mut()) {
                    s.close_when_drained = true;
                    s.flush();
                }
                c.dead = true;
            }
            // A half-closed client may still wait for the answer.
            Role::New if !c.wbuf.is_empty() || c.close_after_flush => {}
            _ => c.dead = true,
        }
    }

    fn drop_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            if let Role::Attach { stdin: true } = c.role {
                self.stdin_attached = false;
            }
            if let Role::Exec(e) = c.role {
                if let Some(e) = self.execs.get_mut(&e) {
                    e.conn = None;
                }
            }
        }
    }

    fn reply(&mut self, id: u64, ev: Event, close: bool) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.send(&ev);
            c.close_after_flush |= close;
            c.flush();
        }
    }

    fn handle_line(&mut self, id: u64, l: &[u8]) {
        let Some(role) = self.conns.get(&id).map(|c| match c.role {
            Role::New => 0,
            Role::Exec(e) => e,
            Role::Attach { .. } => u64::MAX,
            Role::Waiter => u64::MAX - 1,
        }) else {
            return;
        };
        match role {
            0 => match serde_json::from_slice::<Request>(l) {
                Ok(req) => self.handle_request(id, req),
                Err(e) => self.reply(
                    id,
                    Event::Error {
                        message: format!("bad request: {e}"),
                    },
                    true,
                ),
            },
            r if r == u64::MAX - 1 => {}
            r => {
                let input = match serde_json::from_slice::<StreamInput>(l) {
                    Ok(i) => i,
                    Err(_) => return,
                };
                let sink = if r == u64::MAX {
                    if self
                        .conns
                        .get(&id)
                        .is_some_and(|c| c.role == Role::Attach { stdin: true })
                    {
                        self.init_stdin.as_mut()
                    } else {
                        None
                    }
                } else {
                    self.execs.get_mut(&r).and_then(|e| e.stdin.as_mut())
                };
                let Some(sink) = sink else {
                    return;
                };
                match input {
                    StreamInput::Stdin { data } => {
                        if let Ok(b) = decode_data(&data) {
                            sink.buf.extend_from_slice(&b);
                        }
                    }
                    StreamInput::CloseStdin => sink.close_when_drained = true,
                }
                sink.flush();
            }
        }
    }

    fn handle_request(&mut self, id: u64, req: Request) {
        match req {
            Request::Status => {
                let state = if self.init_status.is_some() {
                    ContainerState::Exited
                } else {
                    ContainerState::Running
                };
                let ev = Event::Status {
                    id: self.args.id.clone(),
                    pid: self.init_pid.as_raw(),
                    state,
                    started_at: self.started_at,
                    shim_pid: std::process::id() as i32,
                };
                self.reply(id, ev, true);
            }
            Request::Kill { signal, all } => {
                let res = self.kill(signal, all);
                let ev = match res {
                    Ok(()) => Event::Ok,
                    Err(message) => Event::Error { message },
                };
                self.reply(id, ev, true);
            }
            Request::LogStats => {
                let ev = Event::LogStats(self.log_loss());
                self.reply(id, ev, true);
            }
            Request::Wait => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.role = Role::Waiter;
                }
            }
            Request::Attach { stdin } => {
                if stdin && self.init_stdin.is_none() {
                    return self.reply(
                        id,
                        Event::Error {
                            message: "the container was not started with an open stdin (-i)".into(),
                        },
                        true,
                    );
                }
                if stdin && self.stdin_attached {
                    return self.reply(
                        id,
                        Event::Error {
                            message: "another client is attached to the container's stdin".into(),
                        },
                        true,
                    );
                }
                self.stdin_attached |= stdin;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.role = Role::Attach { stdin };
                }
                self.reply(id, Event::Ok, false);
            }
            Request::Exec(spec) => {
                if self.init_status.is_some() {
                    return self.reply(
                        id,
                        Event::Error {
                            message: "container is not running".into(),
                        },
                        true,
                    );
                }
                match super::exec::start_exec(&self.args, &self.container, &spec) {
                    Ok(p) => {
                        let eid = self.next_id;
                        self.next_id += 1;
                        let pid = p.pid;
                        self.execs.insert(
                            eid,
                            ExecProc {
                                pid,
                                out: [
                                    OutPipe {
                                        fd: Some(File::from(p.stdout)),
                                        stream: Stream::Stdout,
                                    },
                                    OutPipe {
                                        fd: Some(File::from(p.stderr)),
                                        stream: Stream::Stderr,
                                    },
                                ],
                                stdin: p.stdin.map(StdinSink::new),
                                conn: Some(id),
                                status: None,
                                exited_at: None,
                            },
                        );
                        for pipe in &self.execs[&eid].out {
                            if let Some(f) = &pipe.fd {
                                let _ = set_nonblocking(f.as_raw_fd());
                            }
                        }
                        if let Some(c) = self.conns.get_mut(&id) {
                            c.role = Role::Exec(eid);
                        }
                        self.reply(id, Event::Started { pid: pid.as_raw() }, false);
                    }
                    Err(message) => {
                        let exit_code = super::start::start_error_code(&message);
                        self.reply(
                            id,
                            Event::Error {
                                message: message.clone(),
                            },
                            exit_code.is_none(),
                        );
                        if let Some(code) = exit_code {
                            self.reply(
                                id,
                                Event::ExecExit {
                                    exit_code: code,
                                    signal: None,
                                },
                                true,
                            );
                        }
                    }
                }
            }
        }
    }

    fn kill(&mut self, signal: i32, all: bool) -> Result<(), String> {
        if self.init_status.is_some() {
            return Err("container is not running".into());
        }
        let sig = Signal::try_from(signal).map_err(|_| format!("invalid signal {signal}"))?;
        if all {
            self.container
                .kill(sig, true)
                .map_err(|e| super::start::error_chain(&e))
        } else {
            nix::sys::signal::kill(self.init_pid, sig).map_err(|e| format!("kill: {e}"))
        }
    }

    /// Sends the exit of execs whose process ended and whose output is drained.
    fn finish_execs(&mut self) {
        let done: Vec<u64> = self
            .execs
            .iter()
            .filter(|(_, e)| {
                e.exited_at.is_some_and(|at| {
                    e.out.iter().all(|p| p.fd.is_none()) || at.elapsed() > DRAIN_GRACE
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let Some(e) = self.execs.remove(&id) else {
                continue;
            };
            let (exit_code, signal) = e.status.unwrap_or((255, None));
            if let Some(c) = e.conn.and_then(|c| self.conns.get_mut(&c)) {
                c.send(&Event::ExecExit { exit_code, signal });
                c.close_after_flush = true;
                c.flush();
            }
        }
    }

    /// The container's init exited: record, clean up, tell everyone, leave.
    fn finish(mut self) -> i32 {
        // Last output still in the pipes.
        let mut buf = [0u8; READ_CHUNK];
        for i in 0..2 {
            while let Some(n) = Self::read_pipe(&mut self.init_out[i], &mut buf) {
                let stream = self.init_out[i].stream;
                self.log_output(stream, &buf[..n]);
            }
        }
        let oom_killed = self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
        // Kills whatever is left (exec processes) and removes the cgroup; libcontainer's
        // delete only when that failed (see cgroups::teardown for why not always).
        let torn_down = match self.cgroup.as_ref().map(|c| c.cgroups_path()) {
            Some(p) => crate::cgroups::teardown::remove(&p).map_err(|e| {
                shim_log!("zlayer-agent shim {}: {e}", self.args.id);
            }),
            None => Err(()),
        };
        if torn_down.is_err() {
            if let Err(e) = self.container.delete(true) {
                shim_log!(
                    "zlayer-agent shim {}: libcontainer delete: {}",
                    self.args.id,
                    super::start::error_chain(&e)
                );
            }
        }
        let _ = std::fs::remove_dir_all(self.args.runtime_root().join(&self.args.id));
        let (exit_code, signal) = self.init_status.unwrap_or((255, None));
        let rec = ExitRecord {
            exit_code,
            signal,
            oom_killed,
            pid: Some(self.init_pid.as_raw()),
            started_at: Some(self.started_at),
            finished_at: Utc::now(),
            error: None,
        };
        // Before the record: whoever sees the exit sees the loss too.
        let loss = self.log_loss();
        let loss_reservation = self.log_loss_reservation.take();
        if loss.dropped_bytes == 0 {
            if let Some(r) = loss_reservation {
                r.release();
            }
        } else if let Err(e) =
            crate::logs::write_log_loss(&self.args.bundle, loss_reservation, &loss)
        {
            shim_log!(
                "zlayer-agent shim {}: {} bytes of output were not logged ({}); recording that failed: {e}",
                self.args.id,
                loss.dropped_bytes,
                loss.last_error.as_deref().unwrap_or("unknown error")
            );
        }
        // In place for readers (log followers end on it) now, on disk after the answers.
        // Written into the space reserved at start, so that a full disk (maybe filled by
        // this very container) does not lose it; without a reservation, as a new file.
        let published = match self.exit_reservation.take() {
            Some(r) => publish_reserved_exit_record(r, &rec).or_else(|e| {
                shim_log!(
                    "zlayer-agent shim {}: exit record (reserved): {e}",
                    self.args.id
                );
                publish_exit_record(&self.args.bundle, &rec)
            }),
            None => publish_exit_record(&self.args.bundle, &rec),
        };
        let unsynced = match published {
            Ok(u) => Some(u),
            Err(e) => {
                // The waiters still get the record (below), and the daemon stores it.
                shim_log!("zlayer-agent shim {}: exit record: {e}", self.args.id);
                None
            }
        };
        // Exec processes died with the container (pid namespace teardown, delete):
        // collect their statuses briefly, then tell their clients.
        let deadline = Instant::now() + DRAIN_GRACE;
        loop {
            self.reap();
            if self.execs.values().all(|e| e.status.is_some()) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for e in self.execs.values_mut() {
            for p in e.out.iter_mut() {
                p.fd = None;
            }
            e.status
                .get_or_insert((128 + libc::SIGKILL, Some(libc::SIGKILL)));
            e.exited_at = Some(Instant::now());
        }
        self.finish_execs();
        let ev = Event::Exit(rec);
        for c in self.conns.values_mut() {
            if matches!(c.role, Role::Waiter | Role::Attach { .. }) {
                c.send(&ev);
                c.close_after_flush = true;
            }
        }
        let _ = std::fs::remove_file(self.args.socket_path());
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in self.conns.values_mut() {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ));
            c.flush();
        }
        match unsynced.map(|u| u.sync()) {
            // `rm` (of a `--rm` container, right after its waiter's answer) moved the
            // directory away meanwhile: nothing left to make durable.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Some(Err(e)) => shim_log!("zlayer-agent shim {}: exit record: {e}", self.args.id),
            _ => {}
        }
        0
    }
}

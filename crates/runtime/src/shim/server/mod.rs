//! The shim's single-threaded event loop: `poll(2)` over the container's output pipes,
//! a signalfd for SIGCHLD, the listening socket and client connections.
//!
//! One file per job: [`pipes`] (reading output, writing stdin), [`conn`] (client
//! connections), [`requests`] (answering them), [`execs`] (exec processes), [`output`]
//! (the log and attached clients), [`reap`] (waiting for children), [`finish`] (the end).

mod conn;
mod execs;
mod finish;
mod output;
mod pipes;
mod reap;
mod requests;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use libcontainer::container::Container;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use self::conn::{Conn, Role};
use self::execs::{ExecProc, EXEC_BACKPRESSURE};
use self::pipes::{set_nonblocking, OutPipe, StdinSink};
use super::args::ShimArgs;
use super::start::Started;
use crate::atomic::Reservation;
use crate::cgroups::ContainerCgroup;
use crate::logs::{CriLogWriter, LogLoss};
use crate::protocol::Stream;

/// How long to wait for output pipes to drain after a process exited: a background
/// child that inherited them must not keep an exec (or the shim) alive forever.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

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
    pub(crate) fn new(started: Started) -> Self {
        let Started {
            args,
            listener,
            container,
            io,
            started_at,
        } = started;
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
        let mut set = self.poll_set();
        // Wake up regularly while something waits for a drain deadline.
        let timeout = if self.init_exited_at.is_some()
            || self.execs.values().any(|e| e.exited_at.is_some())
        {
            100
        } else {
            1000
        };
        let fds = &mut set.fds;
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            return; // EINTR
        }
        for (pfd, tok) in set.fds.iter().zip(set.toks) {
            if pfd.revents != 0 {
                self.dispatch(tok, pfd.revents);
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

    /// What to wait for: output to read, stdin to write (when buffered), connections
    /// (not read while the stdin they feed is full; written while they have a backlog).
    fn poll_set(&self) -> PollSet {
        let mut set = PollSet::default();
        if let Some(s) = &self.sigfd {
            set.add(s.as_fd().as_raw_fd(), libc::POLLIN, Token::Signal);
        }
        set.add(self.listener.as_raw_fd(), libc::POLLIN, Token::Listener);
        for (i, p) in self.init_out.iter().enumerate() {
            if let Some(f) = &p.fd {
                set.add(f.as_raw_fd(), libc::POLLIN, Token::InitOut(i));
            }
        }
        if let Some(fd) = self.init_stdin.as_ref().and_then(StdinSink::pending_fd) {
            set.add(fd, libc::POLLOUT, Token::InitStdin);
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
                        set.add(f.as_raw_fd(), libc::POLLIN, Token::ExecOut(*id, i));
                    }
                }
            }
            if let Some(fd) = e.stdin.as_ref().and_then(StdinSink::pending_fd) {
                set.add(fd, libc::POLLOUT, Token::ExecStdin(*id));
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
            set.add(c.stream.as_raw_fd(), ev, Token::Conn(*id));
        }
        set
    }

    /// Handles one ready descriptor.
    fn dispatch(&mut self, tok: Token, revents: i16) {
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
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read_conn(id);
                }
                if let Some(c) = self.conns.get_mut(&id) {
                    c.flush();
                }
            }
        }
    }
}

/// The descriptors of one `poll(2)` call and what each stands for.
#[derive(Default)]
struct PollSet {
    fds: Vec<libc::pollfd>,
    toks: Vec<Token>,
}

impl PollSet {
    fn add(&mut self, fd: RawFd, events: i16, tok: Token) {
        self.fds.push(libc::pollfd {
            fd,
            events,
            revents: 0,
        });
        self.toks.push(tok);
    }
}

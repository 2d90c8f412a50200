//! The daemon's client of a container's shim: one connection per request over the shim's
//! socket (status, kill, wait, exec, attach, log stats), with a timeout on every answer so
//! a stopped or hung shim is an error, never a hang. When the shim is gone, the exit
//! record it left answers instead. [`ClientError`] is the error of the whole launch path
//! ([`crate::launch`], [`crate::spawn`]) too.
//!
//! Everything here is blocking and never calls libcontainer, so it is safe in the tokio
//! daemon: call it from `tokio::task::spawn_blocking`, or use the `*_async` wrappers.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::bundle;
use crate::exit::{read_exit_record, ExitRecord};
use crate::protocol::{
    decode_data, encode_data, line, ContainerState, Event, ExecSpec, Request, ShimErrorKind,
    Stream, StreamInput,
};
use crate::rootfs;
use crate::shim::socket_path;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The container could not be started; `exit_code` is docker's status for it
    /// (127: command not found, 126: not executable).
    #[error("starting container {id}: {message}")]
    Start {
        id: String,
        message: String,
        exit_code: Option<i32>,
    },
    /// An `exec` could not start its process (the container itself is fine).
    #[error("exec in container {id}: {message}")]
    Exec {
        id: String,
        message: String,
        exit_code: Option<i32>,
    },
    #[error("shim of {id}: {message}")]
    Shim { id: String, message: String },
    #[error("shim socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("the shim of {0} is gone and left no exit record")]
    Lost(String),
    /// The shim accepted no connection or sent no answer in time (stopped, hung, swapped
    /// out): the container's state is unknown to it.
    #[error("the shim of {id} did not answer {what} within {}s (stopped or hung)", SHIM_CALL_TIMEOUT.as_secs())]
    Unresponsive { id: String, what: String },
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
}

/// How long the daemon waits for a shim to accept a connection, take a request and answer
/// it. Streams (exec, attach, wait) have it for their handshake; a `wait` checks every
/// period that the shim still answers. A shim answers within milliseconds; the margin is
/// for a loaded machine.
pub const SHIM_CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Connects to a unix socket, giving up after `timeout`. A plain `connect` blocks for as long
/// as the listener's backlog is full, which is forever when its process is stopped.
fn connect_with_timeout(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    use nix::errno::Errno;
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    let deadline = Instant::now() + timeout;
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            // A unix socket says EAGAIN (never EINPROGRESS) while the backlog is full.
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(Errno::EAGAIN) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            Err(e) => return Err(e.into()),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

impl ClientError {
    /// Exit status a CLI should return for this error (docker: 125 for daemon errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Start {
                exit_code: Some(c), ..
            }
            | ClientError::Exec {
                exit_code: Some(c), ..
            } => *c,
            _ => 125,
        }
    }
}

/// State of a container as its shim (or its exit record) tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimStatus {
    Running {
        pid: i32,
        shim_pid: i32,
        started_at: DateTime<Utc>,
    },
    Exited(ExitRecord),
}

/// Talks to one container's shim. Cheap to create; every call opens its own connection.
/// When the shim is gone, status and wait answer from the exit record.
#[derive(Debug, Clone)]
pub struct ShimClient {
    socket: PathBuf,
    container_dir: PathBuf,
    id: String,
}

impl ShimClient {
    pub fn new(socket: &Path, container_dir: &Path, id: &str) -> Self {
        ShimClient {
            socket: socket.to_path_buf(),
            container_dir: container_dir.to_path_buf(),
            id: id.to_string(),
        }
    }

    /// The client for container `id` under `state_dir` (e.g. after a daemon restart).
    pub fn for_container(state_dir: &Path, container_dir: &Path, id: &str) -> Self {
        Self::new(&socket_path(state_dir, id), container_dir, id)
    }

    /// A client whose shim answered (or whose exit record exists): errors when the
    /// container is unknown or its shim vanished without a record.
    pub fn connect(socket: &Path, container_dir: &Path, id: &str) -> Result<Self, ClientError> {
        let c = Self::new(socket, container_dir, id);
        c.status()?;
        Ok(c)
    }

    fn io_err(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.socket.clone(),
            source,
        }
    }

    fn unresponsive(&self, what: &str) -> ClientError {
        ClientError::Unresponsive {
            id: self.id.clone(),
            what: what.to_string(),
        }
    }

    /// Opens a connection and sends `req`; `Ok(None)` when no shim listens. Connect and
    /// send have [`SHIM_CALL_TIMEOUT`], and so has every read of the answer until the caller
    /// clears it ([`Conn::streaming`]).
    fn request(&self, req: &Request) -> Result<Option<Conn>, ClientError> {
        let what = request_name(req);
        let stream = match connect_with_timeout(&self.socket, SHIM_CALL_TIMEOUT) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None)
            }
            Err(e) if is_timeout(&e) => return Err(self.unresponsive(what)),
            Err(e) => return Err(self.io_err(e)),
        };
        let mut w = stream.try_clone().map_err(|e| self.io_err(e))?;
        w.write_all(&line(req)).map_err(|e| {
            if is_timeout(&e) {
                self.unresponsive(what)
            } else {
                self.io_err(e)
            }
        })?;
        Ok(Some(Conn {
            reader: BufReader::new(stream),
            writer: w,
            socket: self.socket.clone(),
            id: self.id.clone(),
            what,
            pending: String::new(),
        }))
    }

    fn exited(&self) -> Result<ExitRecord, ClientError> {
        // The shim writes the record before removing its socket; allow a moment for a
        // shim that is finishing right now.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(r) = read_exit_record(&self.container_dir).map_err(|e| self.io_err(e))? {
                return Ok(r);
            }
            if Instant::now() > deadline || !self.container_dir.exists() {
                return Err(ClientError::Lost(self.id.clone()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit record if the container has ended. It is final once it exists (renamed
    /// into place), and the shim that wrote it stops accepting connections before it: a
    /// caller that reads it need not wait for the shim to finish its clean-up and exit.
    fn recorded_exit(&self) -> Result<Option<ExitRecord>, ClientError> {
        read_exit_record(&self.container_dir).map_err(|e| self.io_err(e))
    }

    pub fn status(&self) -> Result<ShimStatus, ClientError> {
        if let Some(r) = self.recorded_exit()? {
            return Ok(ShimStatus::Exited(r));
        }
        let Some(mut c) = self.request(&Request::Status)? else {
            return self.exited().map(ShimStatus::Exited);
        };
        match c.next()? {
            Some(Event::Status {
                pid,
                state: ContainerState::Running,
                started_at,
                shim_pid,
                ..
            }) => Ok(ShimStatus::Running {
                pid,
                shim_pid,
                started_at,
            }),
            Some(Event::Error { message, .. }) => Err(self.shim_err(message)),
            // Exited, or the shim went away while answering: the record tells.
            _ => self.exited().map(ShimStatus::Exited),
        }
    }

    fn shim_err(&self, message: String) -> ClientError {
        ClientError::Shim {
            id: self.id.clone(),
            message,
        }
    }

    /// Sends `signal` to the init process (`all`: to every process of the container).
    pub fn kill(&self, signal: i32, all: bool) -> Result<(), ClientError> {
        let Some(mut c) = self.request(&Request::Kill { signal, all })? else {
            return Err(ClientError::NotRunning(self.id.clone()));
        };
        match c.next()? {
            Some(Event::Ok) => Ok(()),
            Some(Event::Error {
                kind: ShimErrorKind::NotRunning,
                ..
            }) => Err(ClientError::NotRunning(self.id.clone())),
            // A shim of the previous binary sends no kind: ask whether its container ended.
            Some(Event::Error {
                kind: ShimErrorKind::Other,
                ..
            }) if matches!(self.status(), Ok(ShimStatus::Exited(_))) => {
                Err(ClientError::NotRunning(self.id.clone()))
            }
            Some(Event::Error { message, .. }) => Err(self.shim_err(message)),
            _ => Err(ClientError::NotRunning(self.id.clone())),
        }
    }

    /// Blocks until the container exited; returns its exit record. Never hangs on a shim
    /// that stopped answering: every [`SHIM_CALL_TIMEOUT`] without news, a status call
    /// checks that the shim still answers, and [`ClientError::Unresponsive`] ends the wait
    /// when it does not.
    pub fn wait(&self) -> Result<ExitRecord, ClientError> {
        if let Some(r) = self.recorded_exit()? {
            return Ok(r);
        }
        let Some(mut c) = self.request(&Request::Wait)? else {
            return self.exited();
        };
        loop {
            match c.next_raw() {
                Ok(Some(Event::Exit(rec))) => return Ok(rec),
                Err(ClientError::Io { source, .. }) if is_timeout(&source) => {
                    match self.status()? {
                        ShimStatus::Exited(rec) => return Ok(rec),
                        ShimStatus::Running { .. } => continue,
                    }
                }
                // Connection closed without an answer: the shim finished meanwhile.
                _ => return self.exited(),
            }
        }
    }

    /// Like [`wait`](Self::wait) with a deadline: `Ok(None)` if still running after it.
    pub fn wait_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitRecord>, ClientError> {
        let Some(timeout) = timeout else {
            return self.wait().map(Some);
        };
        if let Some(r) = self.recorded_exit()? {
            return Ok(Some(r));
        }
        let Some(mut c) = self.request(&Request::Wait)? else {
            return self.exited().map(Some);
        };
        c.reader
            .get_ref()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| self.io_err(e))?;
        match c.next_raw() {
            Ok(Some(Event::Exit(rec))) => Ok(Some(rec)),
            Err(ClientError::Io { source, .. }) if is_timeout(&source) => Ok(None),
            // Connection closed without an answer: the shim finished meanwhile.
            _ => self.exited().map(Some),
        }
    }

    /// docker stop: `signal` (the image's StopSignal, else SIGTERM), wait `grace`, SIGKILL.
    pub fn stop(&self, grace: Duration, signal: i32) -> Result<ExitRecord, ClientError> {
        match self.kill(signal, false) {
            Ok(()) | Err(ClientError::NotRunning(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(r) = self.wait_timeout(Some(grace))? {
            return Ok(r);
        }
        match self.kill(libc::SIGKILL, true) {
            Ok(()) | Err(ClientError::NotRunning(_)) => {}
            Err(e) => return Err(e),
        }
        self.wait()
    }

    /// Starts a process in the container; stream its output with [`ExecSession`].
    pub fn exec(&self, spec: &ExecSpec) -> Result<ExecSession, ClientError> {
        let Some(mut c) = self.request(&Request::Exec(spec.clone()))? else {
            return Err(ClientError::NotRunning(self.id.clone()));
        };
        match c.next()? {
            Some(Event::Started { pid }) => {
                c.streaming()?;
                Ok(ExecSession { conn: c, pid })
            }
            Some(Event::Error { message, .. }) => {
                let exit_code = match c.next() {
                    Ok(Some(Event::ExecExit { exit_code, .. })) => Some(exit_code),
                    _ => None,
                };
                Err(ClientError::Exec {
                    id: self.id.clone(),
                    message,
                    exit_code,
                })
            }
            other => Err(self.shim_err(format!("unexpected answer to exec: {other:?}"))),
        }
    }

    /// Runs a process to completion, feeding `stdin` (closed afterwards) and collecting output.
    pub fn exec_output(
        &self,
        spec: &ExecSpec,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ClientError> {
        let mut spec = spec.clone();
        spec.stdin = stdin.is_some();
        let mut s = self.exec(&spec)?;
        if let Some(data) = stdin {
            let mut w = s.stdin()?;
            w.write(data)?;
            w.close()?;
        }
        let mut out = ExecOutput::default();
        while let Some(ev) = s.next_event()? {
            match ev {
                StreamEvent::Output(Stream::Stdout, d) => out.stdout.extend(d),
                StreamEvent::Output(Stream::Stderr, d) => out.stderr.extend(d),
                StreamEvent::Exit { exit_code, .. } => {
                    out.exit_code = exit_code;
                    return Ok(out);
                }
            }
        }
        Err(self.shim_err("exec stream ended without exit status".into()))
    }

    /// Streams the container's output from now on (and its stdin if `stdin`).
    pub fn attach(&self, stdin: bool) -> Result<AttachSession, ClientError> {
        let Some(mut c) = self.request(&Request::Attach { stdin })? else {
            return Err(ClientError::NotRunning(self.id.clone()));
        };
        match c.next()? {
            Some(Event::Ok) => {
                c.streaming()?;
                Ok(AttachSession { conn: c })
            }
            Some(Event::Error { message, .. }) => Err(self.shim_err(message)),
            other => Err(self.shim_err(format!("unexpected answer to attach: {other:?}"))),
        }
    }
}

/// The name of a request in errors.
fn request_name(req: &Request) -> &'static str {
    match req {
        Request::Status => "status",
        Request::Kill { .. } => "kill",
        Request::Wait => "wait",
        Request::Exec(_) => "exec",
        Request::Attach { .. } => "attach",
        Request::LogStats => "log_stats",
    }
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    socket: PathBuf,
    id: String,
    /// The request, for errors.
    what: &'static str,
    /// A line read in part when a read timed out (kept for the next read).
    pending: String,
}

impl Conn {
    /// Reads the next event; a read that times out is [`ClientError::Unresponsive`].
    fn next(&mut self) -> Result<Option<Event>, ClientError> {
        self.next_raw().map_err(|e| match e {
            ClientError::Io { source, .. } if is_timeout(&source) => ClientError::Unresponsive {
                id: self.id.clone(),
                what: self.what.to_string(),
            },
            e => e,
        })
    }

    /// The handshake is done: from now on reads and writes wait for as long as the stream
    /// lasts (output may pause for hours; stdin may wait for a slow reader).
    fn streaming(&self) -> Result<(), ClientError> {
        let io = |source| ClientError::Io {
            path: self.socket.clone(),
            source,
        };
        self.writer.set_read_timeout(None).map_err(io)?;
        self.writer.set_write_timeout(None).map_err(io)
    }

    /// Reads the next event; timeouts stay [`ClientError::Io`] (for `wait_timeout`).
    fn next_raw(&mut self) -> Result<Option<Event>, ClientError> {
        let n = self
            .reader
            .read_line(&mut self.pending)
            .map_err(|source| ClientError::Io {
                path: self.socket.clone(),
                source,
            })?;
        let l = std::mem::take(&mut self.pending);
        if n == 0 && l.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&l)
            .map(Some)
            .map_err(|e| ClientError::Shim {
                id: self.id.clone(),
                message: format!("bad message from shim: {e}"),
            })
    }
}

/// Output of a finished exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// One item of an exec/attach stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Output(Stream, Vec<u8>),
    /// The end: exit status (128 + n for signals). For attach: the container's.
    Exit {
        exit_code: i32,
        signal: Option<i32>,
        record: Option<ExitRecord>,
    },
}

/// Writes to a stream's stdin; usable from another thread than the reader.
pub struct StdinWriter {
    stream: UnixStream,
    socket: PathBuf,
}

impl StdinWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(32 * 1024) {
            let msg = line(&StreamInput::Stdin {
                data: encode_data(chunk),
            });
            self.stream
                .write_all(&msg)
                .map_err(|source| ClientError::Io {
                    path: self.socket.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Closes stdin (the process reads EOF).
    pub fn close(mut self) -> Result<(), ClientError> {
        self.stream
            .write_all(&line(&StreamInput::CloseStdin))
            .map_err(|source| ClientError::Io {
                path: self.socket.clone(),
                source,
            })
    }
}

fn stream_event(c: &mut Conn) -> Result<Option<StreamEvent>, ClientError> {
    loop {
        return match c.next()? {
            None => Ok(None),
            Some(Event::Output { stream, data }) => {
                let d = decode_data(&data).map_err(|e| ClientError::Shim {
                    id: c.id.clone(),
                    message: e.to_string(),
                })?;
                Ok(Some(StreamEvent::Output(stream, d)))
            }
            Some(Event::ExecExit { exit_code, signal }) => Ok(Some(StreamEvent::Exit {
                exit_code,
                signal,
                record: None,
            })),
            Some(Event::Exit(rec)) => Ok(Some(StreamEvent::Exit {
                exit_code: rec.exit_code,
                signal: rec.signal,
                record: Some(rec),
            })),
            Some(Event::Error { message, .. }) => Err(ClientError::Shim {
                id: c.id.clone(),
                message,
            }),
            Some(_) => continue,
        };
    }
}

/// A running exec.
pub struct ExecSession {
    conn: Conn,
    pub pid: i32,
}

impl ExecSession {
    /// Next output chunk or the exit; `Ok(None)` if the shim went away.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        stream_event(&mut self.conn)
    }

    /// A writer for the process's stdin (only meaningful with `ExecSpec::stdin`).
    pub fn stdin(&self) -> Result<StdinWriter, ClientError> {
        let stream = self
            .conn
            .writer
            .try_clone()
            .map_err(|source| ClientError::Io {
                path: self.conn.socket.clone(),
                source,
            })?;
        Ok(StdinWriter {
            stream,
            socket: self.conn.socket.clone(),
        })
    }
}

/// An attachment to the container's init process.
pub struct AttachSession {
    conn: Conn,
}

impl AttachSession {
    /// Next output chunk, or the container's exit (with its record).
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        stream_event(&mut self.conn)
    }

    pub fn stdin(&self) -> Result<StdinWriter, ClientError> {
        let stream = self
            .conn
            .writer
            .try_clone()
            .map_err(|source| ClientError::Io {
                path: self.conn.socket.clone(),
                source,
            })?;
        Ok(StdinWriter {
            stream,
            socket: self.conn.socket.clone(),
        })
    }
}

pub(crate) fn join_err(e: tokio::task::JoinError) -> ClientError {
    ClientError::Shim {
        id: String::new(),
        message: format!("blocking task failed: {e}"),
    }
}

impl ShimClient {
    pub async fn status_async(&self) -> Result<ShimStatus, ClientError> {
        let c = self.clone();
        tokio::task::spawn_blocking(move || c.status())
            .await
            .map_err(join_err)?
    }

    pub async fn kill_async(&self, signal: i32, all: bool) -> Result<(), ClientError> {
        let c = self.clone();
        tokio::task::spawn_blocking(move || c.kill(signal, all))
            .await
            .map_err(join_err)?
    }

    /// [`wait`](Self::wait) on tokio's reactor: no thread is held while the container runs.
    /// The daemon keeps one of these per running container, so a blocking wait would cost a
    /// thread (stack, malloc arena) per replica of every service.
    pub async fn wait_async(&self) -> Result<ExitRecord, ClientError> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let stream = match tokio::net::UnixStream::connect(&self.socket).await {
            Ok(s) => Some(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                None
            }
            Err(e) => return Err(self.io_err(e)),
        };
        if let Some(mut stream) = stream {
            let mut l = String::new();
            // A shim that is finishing may reset the connection instead of answering: like
            // `wait`, any failure here means "ask the exit record".
            if stream.write_all(&line(&Request::Wait)).await.is_ok() {
                let _ = tokio::io::BufReader::new(&mut stream)
                    .read_line(&mut l)
                    .await;
            }
            if let Ok(Event::Exit(rec)) = serde_json::from_str::<Event>(&l) {
                return Ok(rec);
            }
        }
        // No shim, or it closed without an answer: it finished; the record tells (polled
        // briefly on the blocking pool, as in `wait`).
        let c = self.clone();
        tokio::task::spawn_blocking(move || c.exited())
            .await
            .map_err(join_err)?
    }

    pub async fn stop_async(
        &self,
        grace: Duration,
        signal: i32,
    ) -> Result<ExitRecord, ClientError> {
        let c = self.clone();
        tokio::task::spawn_blocking(move || c.stop(grace, signal))
            .await
            .map_err(join_err)?
    }
}

impl ShimClient {
    /// How much of the container's output its shim could not log so far (a full disk): from
    /// the shim while it runs, from the `log-loss.json` it left when it ended. `Ok(None)`: the
    /// shim is gone or did not answer within `timeout` (an older shim does not know the
    /// request), and left no record of a loss.
    pub fn log_loss(&self, timeout: Duration) -> Result<Option<crate::logs::LogLoss>, ClientError> {
        let from_file = || Ok(crate::logs::read_log_loss(&self.container_dir));
        let Some(mut c) = self.request(&Request::LogStats)? else {
            return from_file();
        };
        c.reader
            .get_ref()
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|e| self.io_err(e))?;
        match c.next() {
            Ok(Some(Event::LogStats(loss))) => Ok(Some(loss)),
            _ => from_file(),
        }
    }
}

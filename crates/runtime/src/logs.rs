//! Container logs in the CRI format (`<RFC3339Nano> stdout|stderr F|P <text>`), as kubelet
//! and containerd write them: one file per container, rotated by size.
//!
//! `P` marks a fragment whose line continues in the next entry of the same stream; `F`
//! ends a line. The shim writes what it has as soon as it reads it, so a prompt without
//! newline shows up immediately (as `P`) instead of waiting for the newline.
//!
//! Files: `container.log` (current), `container.log.1` (previous), ... up to `max_files`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use crate::protocol::Stream;

pub const LOG_FILE: &str = "container.log";
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
pub const DEFAULT_MAX_FILES: u32 = 3;

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

pub fn log_path(container_dir: &Path) -> PathBuf {
    container_dir.join(LOG_FILE)
}

/// Written by the shim at the end when output was lost: the [`LogLoss`] that `inspect` shows
/// after the container exited (while it runs, the shim answers `log_stats`).
pub const LOG_LOSS_FILE: &str = "log-loss.json";

/// Space for [`LOG_LOSS_FILE`], set aside when the container starts: output is lost when the
/// disk is full, and the record of that loss must not need new space.
pub fn reserve_log_loss(container_dir: &Path) -> io::Result<crate::atomic::Reservation> {
    crate::atomic::Reservation::create(&container_dir.join(LOG_LOSS_FILE), 4096)
}

/// Records `loss` in the container directory, in the space `reservation` holds if given.
pub fn write_log_loss(
    container_dir: &Path,
    reservation: Option<crate::atomic::Reservation>,
    loss: &LogLoss,
) -> io::Result<()> {
    let data = serde_json::to_vec(loss).map_err(io::Error::other)?;
    match reservation {
        Some(r) => r.publish(&data)?.sync(),
        None => crate::atomic::write_file(&container_dir.join(LOG_LOSS_FILE), &data),
    }
}

/// The loss the shim recorded at the end; `None` when nothing was lost (or not recorded).
pub fn read_log_loss(container_dir: &Path) -> Option<LogLoss> {
    let b = fs::read(container_dir.join(LOG_LOSS_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

fn rotated_path(container_dir: &Path, n: u32) -> PathBuf {
    container_dir.join(format!("{LOG_FILE}.{n}"))
}

/// Container output that could not be logged (a full disk, an I/O error): counted so that
/// the loss is reported (`inspect`) instead of ending the shim or going unnoticed.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct LogLoss {
    /// Bytes of output that are not in the log.
    pub dropped_bytes: u64,
    /// Chunks of output whose writing failed.
    pub failed_writes: u64,
    /// The last error, e.g. "No space left on device (os error 28)".
    pub last_error: Option<String>,
}

impl LogLoss {
    /// Counts `bytes` lost to `err`.
    pub fn record(&mut self, bytes: u64, err: &io::Error) {
        self.dropped_bytes += bytes;
        self.failed_writes += 1;
        self.last_error = Some(err.to_string());
    }
}

/// Appends container output to the log, rotating by size.
pub struct CriLogWriter {
    dir: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    loss: LogLoss,
}

impl CriLogWriter {
    pub fn open(container_dir: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let path = log_path(container_dir);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let size = file.metadata()?.len();
        Ok(CriLogWriter {
            dir: container_dir.to_path_buf(),
            file,
            size,
            max_size: max_size.max(4096),
            max_files: max_files.max(1),
            loss: LogLoss::default(),
        })
    }

    /// What could not be written so far.
    pub fn loss(&self) -> &LogLoss {
        &self.loss
    }

    fn rotate(&mut self) -> io::Result<()> {
        let cur = log_path(&self.dir);
        if self.max_files == 1 {
            fs::remove_file(&cur)?;
        } else {
            for n in (1..self.max_files - 1).rev() {
                let from = rotated_path(&self.dir, n);
                if from.exists() {
                    fs::rename(&from, rotated_path(&self.dir, n + 1))?;
                }
            }
            fs::rename(&cur, rotated_path(&self.dir, 1))?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&cur)?;
        self.size = 0;
        Ok(())
    }

    fn entry(&mut self, stream: Stream, tag: char, text: &[u8]) -> io::Result<()> {
        let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut e = Vec::with_capacity(ts.len() + text.len() + 12);
        e.extend_from_slice(ts.as_bytes());
        e.push(b' ');
        e.extend_from_slice(stream_name(stream).as_bytes());
        e.push(b' ');
        e.push(tag as u8);
        e.push(b' ');
        e.extend_from_slice(text);
        e.push(b'\n');
        if self.size > 0 && self.size + e.len() as u64 > self.max_size {
            self.rotate()?;
        }
        if let Err(err) = self.file.write_all(&e) {
            // A partial write (ENOSPC half-way) would leave a torn entry that the next one
            // is appended to: cut the file back to the last complete entry (which also gives
            // the space back).
            let _ = self.file.set_len(self.size);
            return Err(err);
        }
        self.size += e.len() as u64;
        Ok(())
    }

    /// Logs a chunk read from the container: complete lines as `F`, a trailing fragment
    /// as `P`. Long lines are cut into `P` pieces so one entry stays below `max_size`.
    /// On an error the rest of the chunk is dropped and counted in [`Self::loss`]; the log
    /// stays well-formed (whole entries only) and later chunks are tried again.
    pub fn write_chunk(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let max_piece = (self.max_size / 2) as usize;
        let mut rest = data;
        while !rest.is_empty() {
            let (piece, tag, consumed) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= max_piece => (&rest[..i], 'F', i + 1),
                _ if rest.len() > max_piece => (&rest[..max_piece], 'P', max_piece),
                _ => (rest, 'P', rest.len()),
            };
            if let Err(e) = self.entry(stream, tag, piece) {
                self.loss.record(rest.len() as u64, &e);
                return Err(e);
            }
            rest = &rest[consumed..];
        }
        Ok(())
    }
}

/// One log line as read back (fragments joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    /// The line without its newline.
    pub text: Vec<u8>,
    /// False when the container ended in the middle of a line.
    pub complete: bool,
}

impl LogEntry {
    /// Formats as `logs` prints it: `[<RFC3339Nano> ]text\n`.
    pub fn format(&self, timestamps: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if timestamps {
            out.extend_from_slice(
                self.time
                    .to_rfc3339_opts(SecondsFormat::Nanos, true)
                    .as_bytes(),
            );
            out.push(b' ');
        }
        out.extend_from_slice(&self.text);
        if self.complete {
            out.push(b'\n');
        }
        out
    }
}

struct RawEntry {
    time: DateTime<FixedOffset>,
    stream: Stream,
    partial: bool,
    text: Vec<u8>,
}

fn parse_raw(line: &[u8]) -> Option<RawEntry> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let text = parts.next().unwrap_or_default().to_vec();
    Some(RawEntry {
        time: DateTime::parse_from_rfc3339(ts).ok()?,
        stream,
        partial,
        text,
    })
}

/// Joins fragments per stream into complete entries.
#[derive(Default)]
struct Joiner {
    pending: [Option<LogEntry>; 2],
}

impl Joiner {
    fn push(&mut self, r: RawEntry) -> Option<LogEntry> {
        let idx = r.stream as usize;
        let slot = &mut self.pending[idx];
        let mut e = slot.take().unwrap_or(LogEntry {
            time: r.time,
            stream: r.stream,
            text: Vec::new(),
            complete: false,
        });
        e.text.extend_from_slice(&r.text);
        if r.partial {
            *slot = Some(e);
            None
        } else {
            e.complete = true;
            Some(e)
        }
    }

    fn flush(&mut self) -> Vec<LogEntry> {
        let mut v: Vec<LogEntry> = self.pending.iter_mut().filter_map(|p| p.take()).collect();
        v.sort_by_key(|e| e.time);
        v
    }
}

/// The rotated log files, oldest first, and the current one with its inode (if it exists).
type LogSnapshot = (Vec<File>, Option<(File, u64)>);

/// Opens every log file of the container: the rotated ones (oldest first) and the current one.
/// The names are only a snapshot if no rotation happens while they are opened (a rotation
/// renames each file one place up): the current file's inode is compared before and after,
/// and the opening retried when it changed. Once open, the files can be read at leisure;
/// rotation renames or unlinks them, which leaves open descriptors valid.
fn open_snapshot(dir: &Path) -> io::Result<LogSnapshot> {
    let current_ino = || fs::metadata(log_path(dir)).ok().map(|m| m.ino());
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = current_ino();
        let files = log_files(dir);
        let (last, older) = files
            .split_last()
            .expect("log_files always lists the current file");
        let mut opened = Vec::new();
        for f in older {
            match File::open(f) {
                Ok(file) => opened.push(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let current = match File::open(last) {
            Ok(file) => {
                let ino = file.metadata()?.ino();
                Some((file, ino))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let opened_ino = current.as_ref().map(|(_, ino)| *ino);
        let stable = opened_ino == before && before == current_ino();
        // Bounded: a log rotating faster than it can be opened is read as it was found.
        if stable || attempts >= 10 {
            return Ok((opened, current));
        }
    }
}

/// Every log file of the container, oldest first.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut n = 1;
    while rotated_path(dir, n).exists() {
        v.push(rotated_path(dir, n));
        n += 1;
    }
    v.reverse();
    v.push(log_path(dir));
    v
}

/// How long a follower sleeps between looks when it has no inotify watch (the instance
/// limit `fs.inotify.max_user_instances` is reached, or the directory cannot be watched).
const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// With a watch, a follower still looks this often: to notice `cancel`, and as a safety net
/// should an event be missed (e.g. the event queue overflowed).
const FOLLOW_RECHECK: Duration = Duration::from_millis(500);

/// Wakes a follower when something changes in the container directory: the shim appends
/// to the log (IN_MODIFY), rotates it (IN_CREATE, IN_MOVED_*), or renames the exit record
/// into place (IN_MOVED_TO); or the directory goes away. Sleep-polling instead cost every
/// attached `run` half a poll interval on average between the container's exit and the
/// CLI's.
///
/// Plain libc rather than nix's `inotify`/`poll` modules: enabling those nix features
/// would change the workspace's nix build and recompile nix and libcontainer for every
/// crate of the workspace, for three system calls.
struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    fn new(dir: &Path) -> Option<Self> {
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: inotify_init1 takes flags only; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned by inotify_init1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mask = libc::IN_MODIFY
            | libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // SAFETY: a valid inotify descriptor and a NUL-terminated path that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        (wd >= 0).then_some(DirWatch { fd })
    }

    /// Blocks until something changed or `timeout` passed, then drains the queued events
    /// (which ones does not matter: the caller looks at the files again).
    fn wait(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd; EINTR or a timeout just return early.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer of the given length from our non-blocking descriptor.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
        }
    }
}

/// Reads the log, following it across rotation when asked. For `logs [-f] [--tail N]`.
pub struct LogReader {
    dir: PathBuf,
    /// Set up at the first wait of a follower; `None` falls back to sleep-polling.
    watch: Option<DirWatch>,
    watch_tried: bool,
    cancel: Option<Arc<AtomicBool>>,
    queue: std::collections::VecDeque<LogEntry>,
    joiner: Joiner,
    cur: Option<(BufReader<File>, u64)>, // reader on the current file, its inode
    partial_line: Vec<u8>,
    next_path: Option<PathBuf>,
    finished: bool,
}

impl LogReader {
    /// Opens the log of `container_dir`. `tail`: only the last N lines of what exists
    /// now. `follow`: keep waiting for new lines until the container has exited (its exit
    /// record exists) and everything is read, or until `cancel` is set.
    pub fn open(
        container_dir: &Path,
        tail: Option<usize>,
        follow: bool,
        cancel: Option<Arc<AtomicBool>>,
    ) -> io::Result<Self> {
        let dir = container_dir.to_path_buf();
        let mut joiner = Joiner::default();
        let mut entries = Vec::new();
        let (older, current) = open_snapshot(&dir)?;
        for file in older {
            for line in BufReader::new(file).split(b'\n') {
                if let Some(r) = parse_raw(&line?) {
                    entries.extend(joiner.push(r));
                }
            }
        }
        let mut cur = None;
        if let Some((file, ino)) = current {
            let mut r = BufReader::new(file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = r.read_until(b'\n', &mut buf)?;
                if n == 0 {
                    break;
                }
                if buf.last() != Some(&b'\n') {
                    // A line being written right now: re-read it when following.
                    r.seek(SeekFrom::Current(-(n as i64)))?;
                    break;
                }
                buf.pop();
                if let Some(e) = parse_raw(&buf) {
                    entries.extend(joiner.push(e));
                }
            }
            cur = Some((r, ino));
        }
        if !follow {
            entries.extend(joiner.flush());
        }
        if let Some(n) = tail {
            let skip = entries.len().saturating_sub(n);
            entries.drain(..skip);
        }
        Ok(LogReader {
            dir,
            watch: None,
            watch_tried: false,
            cancel,
            queue: entries.into(),
            joiner,
            cur,
            partial_line: Vec::new(),
            next_path: None,
            finished: !follow,
        })
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Reads what is new in the current file; switches files after a rotation.
    fn poll_files(&mut self) -> io::Result<bool> {
        let mut got = false;
        loop {
            if self.cur.is_none() {
                let path = self.next_path.take().unwrap_or_else(|| log_path(&self.dir));
                match File::open(&path) {
                    Ok(f) => {
                        let ino = f.metadata()?.ino();
                        self.cur = Some((BufReader::new(f), ino));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(got),
                    Err(e) => return Err(e),
                }
            }
            let Some((r, ino)) = self.cur.as_mut() else {
                return Ok(got);
            };
            let ino = *ino;
            // Whether ours was rotated away, looked at *before* reading: the shim appends
            // to a file until it renames it, so only a read after seeing the rename is sure
            // to get the file's last lines (checking after the read lost lines written in
            // between).
            let rotated = matches!(fs::metadata(log_path(&self.dir)), Ok(m) if m.ino() != ino);
            let mut chunk = Vec::new();
            r.read_to_end(&mut chunk)?;
            self.partial_line.extend_from_slice(&chunk);
            while let Some(i) = self.partial_line.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial_line.drain(..=i).collect();
                if let Some(e) = parse_raw(&line[..line.len() - 1]) {
                    if let Some(done) = self.joiner.push(e) {
                        self.queue.push_back(done);
                        got = true;
                    }
                }
            }
            // Rotated away? The old file is fully read now; continue with the new one.
            if !rotated {
                return Ok(got);
            }
            // Continue with the file written after ours (several rotations may
            // have happened since the last poll).
            let files = log_files(&self.dir);
            let pos = files
                .iter()
                .position(|p| fs::metadata(p).map(|m| m.ino() == ino).unwrap_or(false));
            self.next_path = match pos {
                Some(i) if i + 1 < files.len() => Some(files[i + 1].clone()),
                Some(_) => None,
                None => files.first().cloned(),
            };
            self.cur = None;
            self.partial_line.clear();
        }
    }

    /// The next entry; blocks while following. `Ok(None)` at the end.
    pub fn next_entry(&mut self) -> io::Result<Option<LogEntry>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if self.finished || self.cancelled() {
                return Ok(None);
            }
            // Watch before looking: a write between the look and the wait still wakes us.
            if !self.watch_tried {
                self.watch_tried = true;
                self.watch = DirWatch::new(&self.dir);
            }
            let exited = crate::exit::exit_path(&self.dir).exists();
            if self.poll_files()? {
                continue;
            }
            if exited || !self.dir.exists() {
                // The shim writes the exit record after the last output: drain and stop.
                // (A removed container directory ends the follow as well.)
                self.poll_files()?;
                self.queue.extend(self.joiner.flush());
                self.finished = true;
                continue;
            }
            match &self.watch {
                Some(w) => w.wait(FOLLOW_RECHECK),
                None => std::thread::sleep(FOLLOW_POLL),
            }
        }
    }
}

/// All entries (or the last `tail`) currently in the log.
pub fn read_all(container_dir: &Path, tail: Option<usize>) -> io::Result<Vec<LogEntry>> {
    let mut r = LogReader::open(container_dir, tail, false, None)?;
    let mut v = Vec::new();
    while let Some(e) = r.next_entry()? {
        v.push(e);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[LogEntry]) -> Vec<String> {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e.text).into_owned())
            .collect()
    }

    #[test]
    fn writes_cri_lines_and_joins_partials() {
        let d = tempfile::tempdir().unwrap();
        let mut w = CriLogWriter::open(d.path(), DEFAULT_MAX_SIZE, 3).unwrap();
        w.write_chunk(Stream::Stdout, b"hello\nwor").unwrap();
        w.write_chunk(Stream::Stderr, b"oops\n").unwrap();
        w.write_chunk(Stream::Stdout, b"ld\n").unwrap();
        let raw = fs::read_to_string(log_path(d.path())).unwrap();
        let lines: Vec<&str> = raw.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].ends_with(" stdout F hello"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout P wor"));
        assert!(lines[2].ends_with(" stderr F oops"));
        // RFC3339Nano timestamp
        let ts = lines[0].split(' ').next().unwrap();
        assert!(DateTime::parse_from_rfc3339(ts).is_ok());
        assert_eq!(ts.split('.').nth(1).unwrap().len(), 10, "{ts}"); // 9 digits + Z
        let all = read_all(d.path(), None).unwrap();
        assert_eq!(texts(&all), vec!["hello", "oops", "world"]);
        assert_eq!(texts(&read_all(d.path(), Some(1)).unwrap()), vec!["world"]);
        let f = all[0].format(true);
        assert!(f.ends_with(b" hello\n"));
        assert_eq!(all[0].format(false), b"hello\n");
    }

    #[test]
    fn rotates_by_size_and_reads_across_files() {
        let d = tempfile::tempdir().unwrap();
        let mut w = CriLogWriter::open(d.path(), 4096, 3).unwrap();
        for i in 0..400 {
            w.write_chunk(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(rotated_path(d.path(), 1).exists());
        assert!(rotated_path(d.path(), 2).exists());
        assert!(!rotated_path(d.path(), 3).exists());
        for p in log_files(d.path()) {
            assert!(fs::metadata(&p).unwrap().len() <= 4096);
        }
        let all = read_all(d.path(), None).unwrap();
        assert_eq!(texts(&all).last().unwrap(), "line 399");
        // oldest lines were rotated out, order is preserved
        let nums: Vec<u32> = texts(&all)
            .iter()
            .map(|t| t[5..].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(nums[0] > 0);
    }

    #[test]
    fn follow_ends_when_the_container_directory_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("c");
        fs::create_dir(&dir).unwrap();
        let mut w = CriLogWriter::open(&dir, DEFAULT_MAX_SIZE, 3).unwrap();
        w.write_chunk(Stream::Stdout, b"only\n").unwrap();
        let mut r = LogReader::open(&dir, None, true, None).unwrap();
        assert_eq!(r.next_entry().unwrap().unwrap().text, b"only");
        let remover = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                w.write_chunk(Stream::Stderr, b"last words\n").unwrap();
                fs::remove_dir_all(&dir).unwrap();
            })
        };
        // Woken by the write and the removal (no exit record ever comes).
        let mut rest = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            rest.push(String::from_utf8(e.text).unwrap());
        }
        remover.join().unwrap();
        assert_eq!(rest, vec!["last words"]);
    }

    #[test]
    fn follow_crosses_rotation_and_stops_at_exit() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let mut w = CriLogWriter::open(&dir, 4096, 3).unwrap();
        w.write_chunk(Stream::Stdout, b"first\n").unwrap();
        let mut r = LogReader::open(&dir, Some(10), true, None).unwrap();
        assert_eq!(r.next_entry().unwrap().unwrap().text, b"first");
        let writer = std::thread::spawn(move || {
            for i in 0..300 {
                w.write_chunk(Stream::Stdout, format!("l{i}\n").as_bytes())
                    .unwrap();
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let rec = crate::exit::ExitRecord {
                exit_code: 0,
                signal: None,
                oom_killed: false,
                pid: None,
                started_at: None,
                finished_at: Utc::now(),
                error: None,
            };
            crate::exit::write_exit_record(&dir, &rec).unwrap();
        });
        let mut got = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            got.push(String::from_utf8(e.text).unwrap());
        }
        writer.join().unwrap();
        assert!(rotated_path(d.path(), 1).exists());
        let want: Vec<String> = (0..300).map(|i| format!("l{i}")).collect();
        assert_eq!(got, want);
    }
}

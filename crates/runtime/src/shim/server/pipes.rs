//! The pipes of the container's processes: output read in small chunks, stdin written
//! without blocking the loop.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::protocol::Stream;

/// Bytes read from an output pipe at once: small, because every page of buffer is
/// resident in every idle shim; a busy container just costs a few more reads.
pub(super) const READ_CHUNK: usize = 8 * 1024;

/// A pipe we read output from.
pub(super) struct OutPipe {
    pub(super) fd: Option<File>,
    pub(super) stream: Stream,
}

/// Buffered, non-blocking writes into a process's stdin.
pub(super) struct StdinSink {
    pub(super) fd: Option<File>,
    pub(super) buf: Vec<u8>,
    pub(super) close_when_drained: bool,
}

impl StdinSink {
    pub(super) fn new(fd: OwnedFd) -> Self {
        let _ = set_nonblocking(fd.as_raw_fd());
        StdinSink {
            fd: Some(File::from(fd)),
            buf: Vec::new(),
            close_when_drained: false,
        }
    }

    /// The descriptor to wait on when buffered data waits to be written.
    pub(super) fn pending_fd(&self) -> Option<RawFd> {
        match &self.fd {
            Some(f) if !self.buf.is_empty() => Some(f.as_raw_fd()),
            _ => None,
        }
    }

    pub(super) fn flush(&mut self) {
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

pub(super) fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map(|_| ())
}

impl OutPipe {
    /// Reads what is there; `None` when nothing is (or at EOF and errors, after which the
    /// pipe is closed).
    pub(super) fn read_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        let f = self.fd.as_mut()?;
        match f.read(buf) {
            Ok(0) => {
                self.fd = None;
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
                self.fd = None;
                None
            }
        }
    }
}

//! The container's output: into the CRI log and to attached clients; what could not be
//! logged is counted.

use super::conn::Role;
use super::pipes::READ_CHUNK;
use super::Server;
use crate::logs::{CriLogWriter, LogLoss};
use crate::protocol::{encode_data, Event, Stream};

impl Server {
    pub(super) fn read_init(&mut self, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let Some(n) = self.init_out[i].read_into(&mut buf) else {
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
    pub(super) fn log_output(&mut self, stream: Stream, data: &[u8]) {
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
    pub(super) fn log_loss(&self) -> LogLoss {
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
}

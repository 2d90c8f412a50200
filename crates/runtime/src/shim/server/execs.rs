//! Exec processes: starting them for a client, streaming their output, reporting their end.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::unistd::Pid;

use super::conn::Role;
use super::pipes::{set_nonblocking, OutPipe, StdinSink, READ_CHUNK};
use super::requests::error_event;
use super::{Server, DRAIN_GRACE};
use crate::protocol::{encode_data, Event, ExecSpec, ShimErrorKind, Stream};
use crate::shim::exec::{start_exec, ExecPipes};

/// Exec output is not read while its client has this much unsent.
pub(super) const EXEC_BACKPRESSURE: usize = 1 << 20;

/// An exec'd process: its pipes, its client (gone when the client hung up) and its end.
pub(super) struct ExecProc {
    pub(super) pid: Pid,
    pub(super) out: [OutPipe; 2],
    pub(super) stdin: Option<StdinSink>,
    pub(super) conn: Option<u64>,
    pub(super) status: Option<(i32, Option<i32>)>,
    pub(super) exited_at: Option<Instant>,
}

impl ExecProc {
    fn new(p: ExecPipes, conn: u64) -> Self {
        let out = [
            OutPipe {
                fd: Some(File::from(p.stdout)),
                stream: Stream::Stdout,
            },
            OutPipe {
                fd: Some(File::from(p.stderr)),
                stream: Stream::Stderr,
            },
        ];
        for pipe in &out {
            if let Some(f) = &pipe.fd {
                let _ = set_nonblocking(f.as_raw_fd());
            }
        }
        ExecProc {
            pid: p.pid,
            out,
            stdin: p.stdin.map(StdinSink::new),
            conn: Some(conn),
            status: None,
            exited_at: None,
        }
    }
}

impl Server {
    /// Starts `spec` for connection `id`, which becomes its stream. A process that could not
    /// start is an error answer, followed by docker's exit status when its command could
    /// not run (127, 126).
    pub(super) fn exec(&mut self, id: u64, spec: &ExecSpec) {
        if self.init_status.is_some() {
            let ev = error_event(ShimErrorKind::NotRunning, "container is not running");
            return self.reply(id, ev, true);
        }
        match start_exec(&self.args, &self.container, spec) {
            Ok(p) => {
                let eid = self.next_id;
                self.next_id += 1;
                let pid = p.pid;
                self.execs.insert(eid, ExecProc::new(p, id));
                if let Some(c) = self.conns.get_mut(&id) {
                    c.role = Role::Exec(eid);
                }
                self.reply(id, Event::Started { pid: pid.as_raw() }, false);
            }
            Err(e) => {
                let exit_code = e.exit_code();
                self.reply(id, error_event(e.kind(), &e), exit_code.is_none());
                if let Some(code) = exit_code {
                    let ev = Event::ExecExit {
                        exit_code: code,
                        signal: None,
                    };
                    self.reply(id, ev, true);
                }
            }
        }
    }

    pub(super) fn read_exec(&mut self, id: u64, i: usize) {
        let mut buf = [0u8; READ_CHUNK];
        let Some(e) = self.execs.get_mut(&id) else {
            return;
        };
        let Some(n) = e.out[i].read_into(&mut buf) else {
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

    /// Sends the exit of execs whose process ended and whose output is drained.
    pub(super) fn finish_execs(&mut self) {
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
}

//! Client connections: accepting, reading request lines and stream input, answering.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use super::Server;
use crate::protocol::{decode_data, line, Event, Request, ShimErrorKind, StreamInput};

/// A connection that does not read its stream is dropped beyond this much backlog
/// (attach) or stops the process's output (exec) — the log never waits for clients.
pub(super) const MAX_BACKLOG: usize = 8 << 20;

/// What a connection is for: set by its first request.
#[derive(PartialEq)]
pub(super) enum Role {
    New,
    Waiter,
    Exec(u64),
    Attach { stdin: bool },
}

/// A client connection with its unread input and unsent output.
pub(super) struct Conn {
    pub(super) stream: UnixStream,
    rbuf: Vec<u8>,
    pub(super) wbuf: Vec<u8>,
    pub(super) role: Role,
    pub(super) close_after_flush: bool,
    pub(super) dead: bool,
}

impl Conn {
    pub(super) fn send(&mut self, ev: &Event) {
        if self.dead {
            return;
        }
        self.wbuf.extend_from_slice(&line(ev));
        if self.wbuf.len() > MAX_BACKLOG {
            self.dead = true;
        }
    }

    pub(super) fn flush(&mut self) {
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

impl Server {
    pub(super) fn accept(&mut self) {
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

    pub(super) fn read_conn(&mut self, id: u64) {
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

    pub(super) fn drop_conn(&mut self, id: u64) {
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

    pub(super) fn reply(&mut self, id: u64, ev: Event, close: bool) {
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
                        kind: ShimErrorKind::BadRequest,
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
}

//! Answering requests: status, kill, wait, attach and log stats (exec: see `execs`).

use nix::sys::signal::Signal;

use super::conn::Role;
use super::Server;
use crate::protocol::{ContainerState, Event, Request, ShimErrorKind};
use crate::shim::error::error_chain;

/// Why a `kill` request failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum KillError {
    #[error("container is not running")]
    NotRunning,
    #[error("invalid signal {0}")]
    InvalidSignal(i32),
    /// libcontainer could not signal the container's processes (its error chain).
    #[error("{0}")]
    Runtime(String),
    #[error("kill: {0}")]
    Os(#[from] nix::errno::Errno),
}

impl KillError {
    fn kind(&self) -> ShimErrorKind {
        match self {
            KillError::NotRunning => ShimErrorKind::NotRunning,
            KillError::InvalidSignal(_) => ShimErrorKind::BadRequest,
            KillError::Runtime(_) | KillError::Os(_) => ShimErrorKind::Other,
        }
    }
}

/// An error answer.
pub(super) fn error_event(kind: ShimErrorKind, message: impl ToString) -> Event {
    Event::Error {
        message: message.to_string(),
        kind,
    }
}

impl Server {
    pub(super) fn handle_request(&mut self, id: u64, req: Request) {
        match req {
            Request::Status => {
                let ev = self.status();
                self.reply(id, ev, true);
            }
            Request::Kill { signal, all } => {
                let ev = match self.kill(signal, all) {
                    Ok(()) => Event::Ok,
                    Err(e) => error_event(e.kind(), &e),
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
            Request::Attach { stdin } => self.attach(id, stdin),
            Request::Exec(spec) => self.exec(id, &spec),
        }
    }

    fn status(&self) -> Event {
        let state = if self.init_status.is_some() {
            ContainerState::Exited
        } else {
            ContainerState::Running
        };
        Event::Status {
            id: self.args.id.clone(),
            pid: self.init_pid.as_raw(),
            state,
            started_at: self.started_at,
            shim_pid: std::process::id() as i32,
        }
    }

    /// Makes the connection an attach stream (holding the init's stdin if `stdin`).
    fn attach(&mut self, id: u64, stdin: bool) {
        if stdin && self.init_stdin.is_none() {
            let ev = error_event(
                ShimErrorKind::StdinNotOpen,
                "the container was not started with an open stdin (-i)",
            );
            return self.reply(id, ev, true);
        }
        if stdin && self.stdin_attached {
            let ev = error_event(
                ShimErrorKind::StdinTaken,
                "another client is attached to the container's stdin",
            );
            return self.reply(id, ev, true);
        }
        self.stdin_attached |= stdin;
        if let Some(c) = self.conns.get_mut(&id) {
            c.role = Role::Attach { stdin };
        }
        self.reply(id, Event::Ok, false);
    }

    fn kill(&mut self, signal: i32, all: bool) -> Result<(), KillError> {
        if self.init_status.is_some() {
            return Err(KillError::NotRunning);
        }
        let sig = Signal::try_from(signal).map_err(|_| KillError::InvalidSignal(signal))?;
        if all {
            self.container
                .kill(sig, true)
                .map_err(|e| KillError::Runtime(error_chain(&e)))
        } else {
            Ok(nix::sys::signal::kill(self.init_pid, sig)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_errors_keep_their_wording_and_carry_a_kind() {
        let e = KillError::NotRunning;
        assert_eq!(
            error_event(e.kind(), &e),
            Event::Error {
                message: "container is not running".into(),
                kind: ShimErrorKind::NotRunning,
            }
        );
        let e = KillError::InvalidSignal(99);
        assert_eq!(e.to_string(), "invalid signal 99");
        assert_eq!(e.kind(), ShimErrorKind::BadRequest);
        let e = KillError::from(nix::errno::Errno::ESRCH);
        assert!(e.to_string().starts_with("kill: "), "{e}");
        assert_eq!(e.kind(), ShimErrorKind::Other);
    }
}

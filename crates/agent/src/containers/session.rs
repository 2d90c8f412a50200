//! `exec` and `attach` as async sessions: every front end (the REST API today, the Docker
//! Engine API and the CRI next) gets the same stream of output and exit, the same stdin writer
//! and the same error kinds, instead of driving the container's shim itself.
//!
//! The shim client is blocking (a unix socket per session), so each session keeps one task of
//! tokio's blocking pool reading events and, with stdin, one writing it; the async side talks
//! to them through bounded channels, which give the shim's pace back to the caller.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;
use zlayer_runtime::{ClientError, ExecOutput, StdinWriter, StreamEvent};
use zlayer_runtime::{ExecSpec, Stream as OutputStream};

use super::lifecycle::runtime_err;
use crate::error::{AgentError, Result};
use crate::Agent;

/// Events buffered between the shim reader and a slow consumer.
const EVENT_BUFFER: usize = 64;
/// Stdin chunks buffered between the caller and the shim writer.
const STDIN_BUFFER: usize = 8;

/// One item of an exec or attach session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A chunk of the process's output.
    Output { stream: OutputStream, data: Bytes },
    /// The end: the exit status (128 + n for a signal) and the signal, if one ended it. For
    /// `attach`, the container's.
    Exit { exit_code: i32, signal: Option<i32> },
}

/// A running exec or an attachment: a stream of [`SessionEvent`]s that ends after the exit
/// (or after an error: the shim went away, the socket failed), and the process's stdin.
pub struct Session {
    events: mpsc::Receiver<Result<SessionEvent>>,
    stdin: Option<SessionStdin>,
}

impl Session {
    /// The process's stdin, once (present for an exec with `spec.stdin` and for attach).
    pub fn take_stdin(&mut self) -> Option<SessionStdin> {
        self.stdin.take()
    }

    /// The next output chunk or the exit; `None` after the last.
    pub async fn next_event(&mut self) -> Option<Result<SessionEvent>> {
        self.events.recv().await
    }
}

impl futures_core::Stream for Session {
    type Item = Result<SessionEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

/// Writes a session's stdin. Dropping it (or [`SessionStdin::close`]) closes the stdin once
/// the data queued so far is written: the process reads EOF.
pub struct SessionStdin {
    chunks: mpsc::Sender<Bytes>,
}

impl SessionStdin {
    /// Queues `data` for the process; waits while the shim is behind. Fails once the stdin is
    /// gone (the process exited, the socket failed).
    pub async fn write(&self, data: Bytes) -> Result<()> {
        self.chunks
            .send(data)
            .await
            .map_err(|_| AgentError::conflict("the process's stdin is closed"))
    }

    /// Closes the stdin after the queued data.
    pub fn close(self) {}
}

/// Reads the shim's events on the blocking pool into a channel, until the exit, an error, or
/// the session is dropped (noticed at the next event). `forward_output` false drops output
/// chunks (an attach whose output the caller reads from the log).
fn read_events(
    mut next: impl FnMut() -> std::result::Result<Option<StreamEvent>, ClientError> + Send + 'static,
    forward_output: bool,
) -> mpsc::Receiver<Result<SessionEvent>> {
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::task::spawn_blocking(move || loop {
        let item = match next() {
            Ok(Some(StreamEvent::Output(stream, data))) => {
                if !forward_output {
                    continue;
                }
                Ok(SessionEvent::Output {
                    stream,
                    data: Bytes::from(data),
                })
            }
            Ok(Some(StreamEvent::Exit {
                exit_code, signal, ..
            })) => {
                let _ = tx.blocking_send(Ok(SessionEvent::Exit { exit_code, signal }));
                return;
            }
            Ok(None) => {
                let _ =
                    tx.blocking_send(Err(AgentError::internal("the container's shim went away")));
                return;
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(runtime_err(e)));
                return;
            }
        };
        if tx.blocking_send(item).is_err() {
            return;
        }
    });
    rx
}

/// Writes queued chunks to the shim on the blocking pool; closes the stdin when the sender is
/// dropped. A failed write ends it (later writes fail).
fn write_stdin(mut writer: StdinWriter) -> SessionStdin {
    let (chunks, mut rx) = mpsc::channel::<Bytes>(STDIN_BUFFER);
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if writer.write(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.close();
    });
    SessionStdin { chunks }
}

fn join_error(e: tokio::task::JoinError) -> AgentError {
    AgentError::internal(format!("blocking task failed: {e}"))
}

impl Agent {
    /// `exec`: starts `spec` in the running container `key`. With `spec.stdin` the session
    /// has a stdin writer; otherwise the process's stdin is /dev/null.
    pub async fn exec_container(self: &Arc<Self>, key: &str, spec: ExecSpec) -> Result<Session> {
        zlayer_runtime::validate::exec_spec(&spec)
            .map_err(|e| AgentError::invalid(e.to_string()))?;
        let key = key.to_string();
        let (_, client) = self.run_blocking(move |a| a.running_shim(&key)).await?;
        // The exec'd process joins the container's cgroup: see attach_lock.
        zlayer_runtime::cgroups::attach_lock::warm_in_background();
        let want_stdin = spec.stdin;
        let mut session = tokio::task::spawn_blocking(move || client.exec(&spec))
            .await
            .map_err(join_error)?
            .map_err(runtime_err)?;
        let stdin = if want_stdin {
            match session.stdin() {
                Ok(w) => Some(write_stdin(w)),
                Err(e) => {
                    tracing::warn!("exec stdin: {e}");
                    None
                }
            }
        } else {
            None
        };
        Ok(Session {
            events: read_events(move || session.next_event(), true),
            stdin,
        })
    }

    /// `attach`: the running container's stdin and its exit; its output too when
    /// `with_output` (a caller that follows the log already has it).
    pub async fn attach_container(
        self: &Arc<Self>,
        key: &str,
        with_output: bool,
    ) -> Result<Session> {
        let key = key.to_string();
        let (_, client) = self.run_blocking(move |a| a.running_shim(&key)).await?;
        let mut session = tokio::task::spawn_blocking(move || client.attach(true))
            .await
            .map_err(join_error)?
            .map_err(runtime_err)?;
        let stdin = match session.stdin() {
            Ok(w) => Some(write_stdin(w)),
            Err(e) => {
                tracing::warn!("attach stdin: {e}");
                None
            }
        };
        Ok(Session {
            events: read_events(move || session.next_event(), with_output),
            stdin,
        })
    }

    /// `exec` without stdin: runs `spec` to completion and returns its output (health checks).
    pub async fn exec_output(&self, key: &str, spec: ExecSpec) -> Result<ExecOutput> {
        zlayer_runtime::validate::exec_spec(&spec)
            .map_err(|e| AgentError::invalid(e.to_string()))?;
        let (_, client) = self.running_shim(key)?;
        // The exec'd process joins the container's cgroup: see attach_lock.
        zlayer_runtime::cgroups::attach_lock::warm_in_background();
        tokio::task::spawn_blocking(move || client.exec_output(&spec, None))
            .await
            .map_err(join_error)?
            .map_err(runtime_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn shim_failures_map_to_one_kind_each() {
        let gone = runtime_err(ClientError::NotRunning("c1".into()));
        assert_eq!(gone.kind, ErrorKind::Conflict);
        assert_eq!(gone.exit_code, Some(125));
        assert!(gone.message.contains("not running"), "{}", gone.message);

        let missing = runtime_err(ClientError::Exec {
            id: "c1".into(),
            message: "nosuch: command not found".into(),
            exit_code: Some(127),
        });
        assert_eq!(missing.kind, ErrorKind::InvalidInput);
        assert_eq!(missing.exit_code, Some(127));

        let io = runtime_err(ClientError::Io {
            path: "/run/x.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        });
        assert_eq!(io.kind, ErrorKind::Internal);
        assert_eq!(io.exit_code, Some(125));
        assert!(
            std::error::Error::source(&io).is_some(),
            "the shim error stays the source"
        );
    }
}

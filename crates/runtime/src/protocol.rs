//! The shim's socket protocol: one JSON object per line, in both directions.
//!
//! A connection starts with one [`Request`]. `status`, `kill` answer once; `wait` answers
//! when the container exits; `exec` and `attach` turn the connection into a stream: the
//! shim sends [`Event::Output`] lines and finally [`Event::Exit`], the client may send
//! [`StreamInput`] lines (stdin data, stdin close). Binary data travels base64-encoded.
//!
//! A failure is [`Event::Error`]: a message for people and an [`ShimErrorKind`] for the client,
//! which decides by the kind, never by the wording.

use serde::{Deserialize, Serialize};

use crate::exit::ExitRecord;

/// What to run with `exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE` added to (and overriding) the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// `-u`: resolved against the container's /etc/passwd; default: the container's user.
    #[serde(default)]
    pub user: Option<String>,
    /// `-w`; default: the container's working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Whether the client will send stdin (`exec -i`); otherwise stdin is /dev/null.
    #[serde(default)]
    pub stdin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Kill {
        signal: i32,
        /// Signal every process of the container, not just its init.
        #[serde(default)]
        all: bool,
    },
    Wait,
    Exec(ExecSpec),
    /// Stream the init process's output from now on; `stdin` attaches its stdin
    /// (only when the container was started with `interactive`).
    Attach {
        #[serde(default)]
        stdin: bool,
    },
    /// How much of the container's output could not be logged so far (`Event::LogStats`).
    LogStats,
}

/// Lines a client sends on an exec/attach stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StreamInput {
    Stdin { data: String },
    CloseStdin,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Running,
    Exited,
}

/// What kind of failure an [`Event::Error`] reports.
///
/// A shim started by an older binary sends no kind, and a newer one may send a kind this
/// binary does not know: both read as [`ShimErrorKind::Other`] (a daemon upgrade meets the shims
/// of running containers, which were started by the previous binary).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShimErrorKind {
    /// The container's init has exited; the request needs a running container.
    NotRunning,
    /// The request itself is wrong: unreadable, an invalid signal, an exec spec that cannot
    /// be run as given (no command, a relative or missing working directory, unknown user).
    BadRequest,
    /// `attach` with stdin to a container that was not started with an open stdin (`-i`).
    StdinNotOpen,
    /// `attach` with stdin while another client holds the container's stdin.
    StdinTaken,
    /// The runtime could not start the exec'd process (e.g. command not found); an
    /// [`Event::ExecExit`] with docker's status may follow.
    ExecFailed,
    /// Anything not listed above. Must stay last (`serde(other)`).
    #[default]
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Ok,
    Error {
        message: String,
        /// Absent from shims older than this field: reads as [`ShimErrorKind::Other`].
        #[serde(default)]
        kind: ShimErrorKind,
    },
    Status {
        id: String,
        pid: i32,
        state: ContainerState,
        started_at: chrono::DateTime<chrono::Utc>,
        /// Pid of the shim itself.
        shim_pid: i32,
    },
    /// An exec process started (its host pid).
    Started {
        pid: i32,
    },
    Output {
        stream: Stream,
        data: String,
    },
    /// End of an exec: its exit code (128 + n for signals).
    ExecExit {
        exit_code: i32,
        signal: Option<i32>,
    },
    /// End of the container (answer to `wait`, last line of `attach`).
    Exit(ExitRecord),
    /// Answer to `log_stats`.
    LogStats(crate::logs::LogLoss),
}

pub fn encode_data(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Stream data that is not base64.
#[derive(Debug, thiserror::Error)]
#[error("bad base64 data: {0}")]
pub struct BadData(#[from] base64::DecodeError);

pub fn decode_data(s: &str) -> Result<Vec<u8>, BadData> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}

/// Serialises one message as a line.
pub fn line<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain enums cannot fail (no maps with non-string keys).
    let mut b = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    b.push(b'\n');
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_roundtrip_as_lines() {
        let r = Request::Exec(ExecSpec {
            args: vec!["sh".into()],
            stdin: true,
            ..Default::default()
        });
        let l = line(&r);
        assert!(l.ends_with(b"\n"));
        let back: Request = serde_json::from_slice(&l).unwrap();
        assert_eq!(back, r);
        let k: Request = serde_json::from_str(r#"{"op":"kill","signal":9}"#).unwrap();
        assert_eq!(
            k,
            Request::Kill {
                signal: 9,
                all: false
            }
        );
        assert_eq!(
            decode_data(&encode_data(b"\x00\xffhi")).unwrap(),
            b"\x00\xffhi"
        );
        assert!(decode_data("not base64!").is_err());
    }

    #[test]
    fn error_kind_crosses_the_socket() {
        let e = Event::Error {
            message: "container is not running".into(),
            kind: ShimErrorKind::NotRunning,
        };
        let back: Event = serde_json::from_slice(&line(&e)).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            String::from_utf8(line(&e)).unwrap(),
            "{\"type\":\"error\",\"message\":\"container is not running\",\"kind\":\"not_running\"}\n"
        );
    }

    #[test]
    fn errors_of_older_and_newer_shims_read_as_other() {
        // A shim started by the previous binary sends no kind.
        let old: Event =
            serde_json::from_str(r#"{"type":"error","message":"container is not running"}"#)
                .unwrap();
        assert_eq!(
            old,
            Event::Error {
                message: "container is not running".into(),
                kind: ShimErrorKind::Other,
            }
        );
        // A kind this binary does not know yet.
        let newer: Event =
            serde_json::from_str(r#"{"type":"error","message":"m","kind":"quota_exceeded"}"#)
                .unwrap();
        assert_eq!(
            newer,
            Event::Error {
                message: "m".into(),
                kind: ShimErrorKind::Other,
            }
        );
    }

    /// Answers every connection to `socket` with `answer` (one line), `n` times.
    fn fake_shim(socket: &std::path::Path, answer: &'static str, n: usize) {
        use std::io::{BufRead, Write};
        let l = std::os::unix::net::UnixListener::bind(socket).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut req = String::new();
                std::io::BufReader::new(&s).read_line(&mut req).unwrap();
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
    }

    #[test]
    fn kill_tells_not_running_by_kind_and_asks_a_shim_without_kinds() {
        use crate::client::{ClientError, ShimClient};
        let dir = tempfile::tempdir().unwrap();
        let new_sock = dir.path().join("new.sock");
        fake_shim(
            &new_sock,
            "{\"type\":\"error\",\"message\":\"reworded\",\"kind\":\"not_running\"}\n",
            1,
        );
        let c = ShimClient::new(&new_sock, dir.path(), "c1");
        assert!(matches!(c.kill(15, false), Err(ClientError::NotRunning(_))));

        // A shim of the previous binary: no kind. Whether the container ended decides.
        let old_sock = dir.path().join("old.sock");
        fake_shim(
            &old_sock,
            "{\"type\":\"error\",\"message\":\"container is not running\"}\n",
            3,
        );
        let running = tempfile::tempdir().unwrap();
        let c = ShimClient::new(&old_sock, running.path(), "c2");
        // No exit record, and the status answer is no status: not taken for an exit.
        let e = c.kill(15, false).unwrap_err();
        assert!(matches!(e, ClientError::Shim { .. }), "{e}");
        let exited = tempfile::tempdir().unwrap();
        let rec = ExitRecord {
            exit_code: 0,
            signal: None,
            oom_killed: false,
            pid: None,
            started_at: None,
            finished_at: chrono::Utc::now(),
            error: None,
        };
        crate::exit::write_exit_record(exited.path(), &rec).unwrap();
        let c = ShimClient::new(&old_sock, exited.path(), "c2");
        assert!(matches!(c.kill(15, false), Err(ClientError::NotRunning(_))));
    }
}

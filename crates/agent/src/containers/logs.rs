//! `logs [-f] [--tail N] [--since T] [--until T]` as an async stream of lines, the same for
//! every front end.
//!
//! The log reader is blocking (files, inotify for a follow): one task of tokio's blocking
//! pool reads it into a bounded channel; dropping the stream stops a follow.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use zlayer_runtime::logs::LogReader;

pub use zlayer_runtime::logs::LogEntry;

use crate::error::{AgentError, Result};
use crate::Agent;

/// Lines buffered between the reader and a slow consumer.
const LINE_BUFFER: usize = 64;

/// What `logs` reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Keep reading until the container exits (and its output is read).
    pub follow: bool,
    /// Start with the last `tail` lines only.
    pub tail: Option<usize>,
    /// Only lines written at or after this time (`--since`).
    pub since: Option<DateTime<Utc>>,
    /// Only lines written at or before this time (`--until`); a follow ends then.
    pub until: Option<DateTime<Utc>>,
}

impl LogOptions {
    /// Whether `entry` lies in the `since`..=`until` window.
    fn in_window(&self, entry: &LogEntry) -> bool {
        let t = entry.time.with_timezone(&Utc);
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    /// Whether `entry` comes after `until`: lines are in time order, so nothing later can
    /// be in the window.
    fn past_until(&self, entry: &LogEntry) -> bool {
        self.until
            .is_some_and(|u| entry.time.with_timezone(&Utc) > u)
    }
}

/// A container's log lines: [`LogEntry`]s until the end (with `follow`: the container's exit),
/// or an error after which nothing follows. Dropping it stops a follow.
pub struct LogStream {
    lines: mpsc::Receiver<Result<LogEntry>>,
    cancel: Arc<AtomicBool>,
    /// Ends a follow at `until`; aborted with the stream, so a client that goes away
    /// leaves no timer behind (an `until` years ahead must not pile up tasks).
    until_timer: Option<tokio::task::JoinHandle<()>>,
}

impl LogStream {
    /// The next line; `None` at the end.
    pub async fn next_line(&mut self) -> Option<Result<LogEntry>> {
        self.lines.recv().await
    }
}

impl futures_core::Stream for LogStream {
    type Item = Result<LogEntry>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.lines.poll_recv(cx)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        // The reader notices within its poll period and ends.
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(timer) = &self.until_timer {
            timer.abort();
        }
    }
}

/// Reads `reader` to its end on the blocking pool, keeping the lines in `opts`' window.
fn read_lines(mut reader: LogReader, opts: LogOptions) -> mpsc::Receiver<Result<LogEntry>> {
    let (tx, rx) = mpsc::channel(LINE_BUFFER);
    tokio::task::spawn_blocking(move || {
        loop {
            match reader.next_entry() {
                Ok(Some(entry)) if opts.past_until(&entry) => break,
                Ok(Some(entry)) if !opts.in_window(&entry) => {}
                Ok(Some(entry)) => {
                    if tx.blocking_send(Ok(entry)).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let err = AgentError::internal(format!("reading logs: {e}")).with_source(e);
                    let _ = tx.blocking_send(Err(err));
                    break;
                }
            }
        }
        // The stream ends here, before the reader is dropped: closing a follower's inotify
        // descriptor waits for an SRCU grace period in the kernel (5-15 ms here), which must
        // not sit between the container's exit and what the caller does next (an attached
        // `run` waits for the exit status).
        drop(tx);
        drop(reader);
    });
    rx
}

impl Agent {
    /// `logs`: the container's log lines as a stream.
    pub async fn container_logs(
        self: &Arc<Self>,
        key: &str,
        opts: LogOptions,
    ) -> Result<LogStream> {
        let cancel = Arc::new(AtomicBool::new(false));
        let key = key.to_string();
        let reader_cancel = Arc::clone(&cancel);
        let reader = self
            .run_blocking(move |a| {
                let r = a.containers().resolve(&key)?;
                let dir = a.container_dir(&r.id);
                LogReader::open(&dir, opts.tail, opts.follow, Some(reader_cancel)).map_err(|e| {
                    AgentError::internal(format!("reading logs of {}: {e}", r.name)).with_source(e)
                })
            })
            .await?;
        // A follow ends at `until` even when no line comes: the reader notices the cancel
        // flag within its poll period.
        let until_timer = opts.until.filter(|_| opts.follow).map(|until| {
            let cancel = Arc::clone(&cancel);
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                cancel.store(true, Ordering::Relaxed);
            })
        });
        Ok(LogStream {
            lines: read_lines(reader, opts),
            cancel,
            until_timer,
        })
    }
}

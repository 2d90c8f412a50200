//! Accepting without hot loops, and logging without floods.
//!
//! `accept` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM while the condition lasts; retrying at
//! once spins a core and, with a log line per failure, writes gigabytes of identical lines. The
//! loop here backs off exponentially (10 ms up to 1 s) and logs through a [`LogLimiter`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Lets one line through per interval and counts what it held back.
///
/// Hand-written rather than a rate-limiting crate (e.g. `governor`): all that is needed is
/// "at most one line per interval, say how many were dropped", which is a timestamp and a
/// counter; `tracing` itself has no throttling.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were held back since the last one),
    /// `None` when this one is to be held back.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.last {
            Some(last) if now.duration_since(last) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

impl Default for LogLimiter {
    /// One line per 10 seconds.
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

/// Exponential back-off between failed accepts.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: BACKOFF_MIN }
    }
}

impl AcceptBackoff {
    /// The pause before the next attempt (doubling up to one second).
    pub fn failed(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        now
    }

    pub fn succeeded(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Errors that concern only the connection being accepted (it was reset or aborted before we
/// took it); the listener is fine and the next accept may succeed at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// The next connection of `listener`. Failures other than a connection's own are logged
/// (through `log`, naming `what`) and followed by a growing pause, so a process out of
/// descriptors waits for some to be freed instead of spinning.
pub async fn accept_with_backoff(
    listener: &TcpListener,
    backoff: &mut AcceptBackoff,
    log: &LogLimiter,
    what: &str,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                backoff.succeeded();
                return conn;
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let pause = backoff.failed();
                if let Some(suppressed) = log.allow() {
                    tracing::warn!(
                        suppressed,
                        "{what}: accept failed: {e}; retrying in {pause:?} (connections wait in \
                         the backlog meanwhile)"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_lets_one_line_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_millis(300));
        assert_eq!(l.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(l.allow(), Some(5));
        assert_eq!(l.allow(), None);
    }

    #[test]
    fn backoff_doubles_up_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let steps: Vec<u128> = (0..9).map(|_| b.failed().as_millis()).collect();
        assert_eq!(steps, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), BACKOFF_MIN);
    }
}

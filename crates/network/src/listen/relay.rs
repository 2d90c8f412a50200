//! A bidirectional copy between two streams that ends when the connection stays idle too long
//! or lives past a total deadline, so a client that connects and sends nothing (or trickles a
//! byte now and then) cannot hold the daemon's descriptors forever.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When a relayed connection is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayTimeouts {
    /// No byte in either direction for this long.
    pub idle: Duration,
    /// Since the connection was accepted (`None`: no total limit).
    pub lifetime: Option<Duration>,
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed; bytes copied client→upstream and upstream→client.
    Closed(u64, u64),
    IdleTimeout,
    LifetimeExceeded,
}

/// Copies between `a` and `b` in both directions (half-closes passed on) until both are done,
/// either fails, or a timeout of `t` strikes; then both are dropped (closed).
pub async fn relay<A, B>(a: A, b: B, t: RelayTimeouts) -> io::Result<RelayEnd>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Tracked::new(a, start, Arc::clone(&last));
    let mut b = Tracked::new(b, start, Arc::clone(&last));
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let lifetime_end = t.lifetime.map(|l| start + l);
    loop {
        let idle_end = start + Duration::from_millis(last.load(Ordering::Relaxed)) + t.idle;
        let wake = lifetime_end.map_or(idle_end, |l| l.min(idle_end));
        tokio::select! {
            done = &mut copy => {
                let (up, down) = done?;
                return Ok(RelayEnd::Closed(up, down));
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if lifetime_end.is_some_and(|l| now >= l) {
                    return Ok(RelayEnd::LifetimeExceeded);
                }
                let idle_end =
                    start + Duration::from_millis(last.load(Ordering::Relaxed)) + t.idle;
                if now >= idle_end {
                    return Ok(RelayEnd::IdleTimeout);
                }
                // Traffic since the timer was set: sleep until the new idle deadline.
            }
        }
    }
}

/// A stream that records when it last moved a byte (milliseconds since `start`).
struct Tracked<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Tracked<S> {
    fn new(inner: S, start: Instant, last: Arc<AtomicU64>) -> Self {
        Tracked { inner, start, last }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_ends_idle_and_overlong_connections() {
        // Data flows and the relay ends when both sides close.
        let (client, relay_a) = tokio::io::duplex(64);
        let (relay_b, upstream) = tokio::io::duplex(64);
        let t = RelayTimeouts {
            idle: Duration::from_secs(5),
            lifetime: None,
        };
        let task = tokio::spawn(relay(relay_a, relay_b, t));
        let (mut client, mut upstream) = (client, upstream);
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        upstream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        upstream.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        drop(client);
        drop(upstream);
        assert_eq!(task.await.unwrap().unwrap(), RelayEnd::Closed(4, 5));

        // Idle: ended after the idle time without traffic, and traffic postpones it.
        let (mut client, relay_a) = tokio::io::duplex(64);
        let (relay_b, mut upstream) = tokio::io::duplex(64);
        let t = RelayTimeouts {
            idle: Duration::from_millis(300),
            lifetime: None,
        };
        let began = std::time::Instant::now();
        let task = tokio::spawn(relay(relay_a, relay_b, t));
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            upstream.read_exact(&mut b).await.unwrap();
        }
        assert_eq!(task.await.unwrap().unwrap(), RelayEnd::IdleTimeout);
        assert!(
            began.elapsed() >= Duration::from_millis(850),
            "{:?}",
            began.elapsed()
        );
        // The relay dropped its ends: both peers see EOF.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);

        // Lifetime: ended although busy.
        let (mut client, relay_a) = tokio::io::duplex(64);
        let (relay_b, mut upstream) = tokio::io::duplex(64);
        let t = RelayTimeouts {
            idle: Duration::from_secs(5),
            lifetime: Some(Duration::from_millis(400)),
        };
        let task = tokio::spawn(relay(relay_a, relay_b, t));
        let busy = tokio::spawn(async move {
            let mut b = [0u8; 1];
            while client.write_all(b"x").await.is_ok() && upstream.read_exact(&mut b).await.is_ok()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert_eq!(task.await.unwrap().unwrap(), RelayEnd::LifetimeExceeded);
        busy.await.unwrap();
    }
}

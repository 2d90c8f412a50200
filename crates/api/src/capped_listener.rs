//! The opt-in metrics listener (`daemon --metrics-addr`) as containers may reach it (bound to
//! `0.0.0.0` or a bridge address): capped like the daemon's other container-reachable
//! listeners (`zlayer_agent::network::listen`), so idle connections cannot exhaust the daemon.
//!
//! axum's own `TcpListener` accepts without limit and its server sets no read timeout; this
//! listener admits a bounded number of connections (in total and per client address) and
//! ends a connection that sends nothing for [`IDLE`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use zlayer_agent::network::listen::{
    accept_with_backoff, AcceptBackoff, ConnGate, ConnLimits, ConnPermit, LogLimiter,
};

/// A Prometheus server scrapes with one or two connections.
const LIMITS: ConnLimits = ConnLimits {
    max_total: 64,
    max_per_client: 8,
};
/// A connection that sends no byte for this long is closed (between requests too).
const IDLE: Duration = Duration::from_secs(30);

/// An axum listener with connection caps and an idle timeout.
pub struct CappedListener {
    inner: TcpListener,
    gate: Arc<ConnGate>,
    backoff: AcceptBackoff,
    accept_errors: LogLimiter,
    refusals: LogLimiter,
}

impl CappedListener {
    pub fn new(inner: TcpListener) -> Self {
        CappedListener {
            inner,
            gate: ConnGate::new(LIMITS, 1),
            backoff: AcceptBackoff::default(),
            accept_errors: LogLimiter::default(),
            refusals: LogLimiter::default(),
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedStream, SocketAddr) {
        loop {
            let (stream, peer) = accept_with_backoff(
                &self.inner,
                &mut self.backoff,
                &self.accept_errors,
                "metrics listener",
            )
            .await;
            match self.gate.try_admit(peer.ip()) {
                Ok(permit) => return (CappedStream::new(stream, permit), peer),
                Err(refusal) => {
                    if let Some(suppressed) = self.refusals.allow() {
                        tracing::warn!(%peer, suppressed, "metrics listener: connection refused: {refusal}");
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An admitted connection: holds its place until dropped; reads fail with `TimedOut` after
/// [`IDLE`] without a byte.
pub struct CappedStream {
    stream: TcpStream,
    _permit: ConnPermit,
    idle: Pin<Box<Sleep>>,
}

impl CappedStream {
    fn new(stream: TcpStream, permit: ConnPermit) -> Self {
        CappedStream {
            stream,
            _permit: permit,
            idle: Box::pin(tokio::time::sleep(IDLE)),
        }
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.idle.as_mut().reset(Instant::now() + IDLE);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request for {IDLE:?}"),
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connections_over_the_per_client_cap_are_closed_at_once() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(CappedListener::new(l), app).await });
        let mut held = Vec::new();
        for _ in 0..LIMITS.max_per_client {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
            held.push(s);
        }
        // The next one from the same address: closed without an answer.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut rest = Vec::new();
        let got = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed at once");
        assert!(got.is_err() || rest.is_empty(), "{rest:?}");
        // A place freed is a place available.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}

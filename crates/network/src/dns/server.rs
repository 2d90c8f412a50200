//! The per-network DNS server (UDP and TCP on port 53 of the bridge address).
//!
//! Built on `hickory-proto` for message parsing and encoding. The full `hickory-server`
//! authority/catalog machinery is made for zone files; our "zone" is a table that changes with
//! container health, and everything else is relayed verbatim to upstream resolvers (the relay
//! keeps the client's query id and flags, so answers are byte-for-byte the upstream's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::DnsRegistry;
use crate::error::{NetworkError, Result};
use crate::listen::{
    accept_with_backoff, AcceptBackoff, ConnGate, ConnLimits, LogLimiter, Refusal,
};

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL of our answers: 0, because replica health changes and round-robin needs fresh queries.
const ANSWER_TTL: u32 = 0;

/// Every container of the network reaches this server, so what one of them opens must stay
/// bounded (RFC 7766 §6.2.2 asks DNS servers to limit connections and idle time). Resolvers
/// use TCP only for truncated answers and zone transfers: a few connections per client.
const TCP_LIMITS: ConnLimits = ConnLimits {
    max_total: 128,
    max_per_client: 16,
};
/// A TCP connection without a query for this long is closed (unbound: 30 s, RFC 7766
/// recommends seconds); reads and writes that stall as long end it too.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A TCP connection is closed this long after it was accepted, busy or not.
const TCP_LIFETIME: Duration = Duration::from_secs(60);
/// Upstream relays in flight (one socket each, at most [`UPSTREAM_TIMEOUT`] per upstream).
/// Over the cap a query gets SERVFAIL at once (dnsmasq's `dns-forward-max` is 150).
const FORWARD_LIMITS: ConnLimits = ConnLimits {
    max_total: 256,
    max_per_client: 64,
};

/// A running DNS server; stops when dropped or on [`DnsServer::stop`].
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    registry: Arc<DnsRegistry>,
    upstreams: Vec<SocketAddr>,
    /// Relays to the upstreams in flight (each holds a socket), UDP and TCP clients together.
    forwards: Arc<ConnGate>,
    /// Refused connections and forwards are logged at most once per interval.
    refusals: LogLimiter,
}

impl Shared {
    fn refused(&self, peer: SocketAddr, what: &str, refusal: Refusal) {
        if let Some(suppressed) = self.refusals.allow() {
            tracing::warn!(%peer, suppressed, "DNS server: {what} refused: {refusal}");
        }
    }
}

impl DnsServer {
    /// Listen on `listen` (UDP and TCP) and answer from `registry`, forwarding other names to
    /// `upstreams` in order. The address is bound with IP_FREEBIND, so the server can start before
    /// the bridge (created by the first CNI ADD) carries the address; it answers from then on.
    /// Port 0 picks a free port (the same for UDP and TCP).
    pub async fn start(
        listen: SocketAddr,
        registry: Arc<DnsRegistry>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsServer> {
        let udp = bind_udp(listen)?;
        let addr = udp
            .local_addr()
            .map_err(|e| io_err("reading local address of DNS socket", listen, e))?;
        let tcp = bind_tcp(addr)?;
        let shared = Arc::new(Shared {
            registry,
            upstreams,
            forwards: ConnGate::new(FORWARD_LIMITS, 1),
            refusals: LogLimiter::default(),
        });
        let udp = Arc::new(udp);
        let udp_task = tokio::spawn(serve_udp(udp, shared.clone()));
        let tcp_task = tokio::spawn(serve_tcp(tcp, shared));
        tracing::info!(%addr, "DNS server listening");
        Ok(DnsServer {
            addr,
            tasks: vec![udp_task, tcp_task],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving (in-flight forwards are abandoned).
    pub fn stop(self) {}
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn io_err(action: &'static str, addr: SocketAddr, e: std::io::Error) -> NetworkError {
    NetworkError::io(action, addr.to_string(), e)
}

fn socket_for(listen: SocketAddr, ty: socket2::Type) -> Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket};
    let proto = if ty == socket2::Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let sock = Socket::new(Domain::for_address(listen), ty, Some(proto))
        .map_err(|e| io_err("creating DNS socket for", listen, e))?;
    sock.set_reuse_address(true)
        .and_then(|()| match listen {
            SocketAddr::V4(_) => sock.set_freebind(true),
            SocketAddr::V6(_) => sock.set_freebind_ipv6(true),
        })
        .and_then(|()| sock.set_nonblocking(true))
        .map_err(|e| io_err("configuring DNS socket for", listen, e))?;
    sock.bind(&listen.into())
        .map_err(|e| io_err("binding DNS server to", listen, e))?;
    Ok(sock)
}

fn bind_udp(listen: SocketAddr) -> Result<UdpSocket> {
    let sock = socket_for(listen, socket2::Type::DGRAM)?;
    UdpSocket::from_std(sock.into()).map_err(|e| io_err("registering DNS socket", listen, e))
}

fn bind_tcp(listen: SocketAddr) -> Result<TcpListener> {
    let sock = socket_for(listen, socket2::Type::STREAM)?;
    sock.listen(128)
        .map_err(|e| io_err("listening on", listen, e))?;
    TcpListener::from_std(sock.into()).map_err(|e| io_err("registering DNS socket", listen, e))
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    let mut backoff = AcceptBackoff::default();
    let errors = LogLimiter::default();
    loop {
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                // Never a hot loop, whatever the error.
                let pause = backoff.failed();
                if let Some(suppressed) = errors.allow() {
                    tracing::warn!(%e, suppressed, "DNS UDP receive; retrying in {pause:?}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let query = &buf[..len];
        let reply = match answer_locally(&shared, query) {
            Answer::Reply(reply) => reply,
            Answer::Ignore => continue,
            Answer::Forward { id, op } => match shared.forwards.try_admit(peer.ip()) {
                // One socket per forward in flight: bounded by the gate.
                Ok(permit) => {
                    let query = query.to_vec();
                    let sock = sock.clone();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let reply = forward_or_servfail(&shared.upstreams, &query, id, op).await;
                        drop(permit);
                        if let Some(reply) = reply {
                            if let Err(e) = sock.send_to(&reply, peer).await {
                                tracing::debug!(%e, %peer, "DNS UDP reply");
                            }
                        }
                    });
                    continue;
                }
                Err(refusal) => {
                    shared.refused(peer, "forward", refusal);
                    match servfail(id, op) {
                        Some(r) => r,
                        None => continue,
                    }
                }
            },
        };
        if let Err(e) = sock.send_to(&reply, peer).await {
            tracing::debug!(%e, %peer, "DNS UDP reply");
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let gate = ConnGate::new(TCP_LIMITS, 1);
    let mut backoff = AcceptBackoff::default();
    let accept_errors = LogLimiter::default();
    loop {
        let (stream, peer) =
            accept_with_backoff(&listener, &mut backoff, &accept_errors, "DNS server (TCP)").await;
        let permit = match gate.try_admit(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                shared.refused(peer, "TCP connection", refusal);
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(TCP_LIFETIME, serve_tcp_conn(stream, peer, &shared)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%e, %peer, "DNS TCP connection"),
                Err(_) => {
                    tracing::debug!(%peer, "DNS TCP connection closed after {TCP_LIFETIME:?}")
                }
            }
        });
    }
}

/// RFC 1035 §4.2.2: each message is preceded by its 2-byte length. The connection is closed
/// after [`TCP_IDLE`] without a query (RFC 7766 §6.2.3), or when a read or write stalls as long.
async fn serve_tcp_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> std::io::Result<()> {
    let timed_out = || std::io::Error::from(std::io::ErrorKind::TimedOut);
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Ok(l)) => l as usize,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
        };
        let mut query = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| timed_out())??;
        let reply = match answer_locally(shared, &query) {
            Answer::Reply(r) => Some(r),
            Answer::Ignore => None,
            Answer::Forward { id, op } => match shared.forwards.try_admit(peer.ip()) {
                Ok(_permit) => forward_or_servfail(&shared.upstreams, &query, id, op).await,
                Err(refusal) => {
                    shared.refused(peer, "forward", refusal);
                    servfail(id, op)
                }
            },
        };
        if let Some(reply) = reply {
            let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
            let mut framed = Vec::with_capacity(2 + len as usize);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&reply[..len as usize]);
            tokio::time::timeout(TCP_IDLE, stream.write_all(&framed))
                .await
                .map_err(|_| timed_out())??;
        }
    }
}

/// What to do with one query message.
enum Answer {
    /// Send this.
    Reply(Vec<u8>),
    /// Garbage we cannot even echo an id for.
    Ignore,
    /// Not ours: relay to the upstreams.
    Forward { id: u16, op: OpCode },
}

/// Answers from the table (or with an error) without any I/O.
fn answer_locally(shared: &Shared, query: &[u8]) -> Answer {
    let reply = |m: Message| m.to_vec().map_or(Answer::Ignore, Answer::Reply);
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return reply(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Answer::Ignore,
    };
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query {
        return reply(Message::error_msg(
            msg.id(),
            msg.op_code(),
            ResponseCode::NotImp,
        ));
    }
    if let [q] = msg.queries() {
        let name = q.name().to_ascii();
        if let Some(ips) = shared.registry.lookup(&name) {
            return reply(local_answer(&msg, &ips));
        }
    }
    Answer::Forward {
        id: msg.id(),
        op: msg.op_code(),
    }
}

fn servfail(id: u16, op: OpCode) -> Option<Vec<u8>> {
    Message::error_msg(id, op, ResponseCode::ServFail)
        .to_vec()
        .ok()
}

/// The upstreams' answer, or SERVFAIL when none answers.
async fn forward_or_servfail(
    upstreams: &[SocketAddr],
    query: &[u8],
    id: u16,
    op: OpCode,
) -> Option<Vec<u8>> {
    match forward(upstreams, query, id).await {
        Some(reply) => Some(reply),
        None => servfail(id, op),
    }
}

/// An authoritative answer from the table: A records for A/ANY queries, an empty NOERROR for
/// other types (so AAAA lookups of a service do not wait for an upstream).
fn local_answer(query: &Message, ips: &[Ipv4Addr]) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError);
    for q in query.queries() {
        reply.add_query(q.clone());
        if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            for ip in ips {
                reply.add_answer(Record::from_rdata(
                    q.name().clone(),
                    ANSWER_TTL,
                    RData::A(A(*ip)),
                ));
            }
        }
    }
    reply
}

/// Relay the raw query to each upstream in turn over UDP; the first answer carrying our id wins.
async fn forward(upstreams: &[SocketAddr], query: &[u8], id: u16) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let local: SocketAddr = match upstream.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.connect(upstream).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        // Large enough for any UDP DNS message, so an EDNS answer is never cut short.
        let mut buf = vec![0u8; 65_535];
        let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                    buf.truncate(n);
                    return Some(buf);
                }
                // A stray datagram: keep waiting until the deadline.
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, %e, "DNS upstream");
                    break;
                }
                Err(_) => {
                    tracing::debug!(%upstream, "DNS upstream timed out");
                    break;
                }
            }
        }
    }
    None
}

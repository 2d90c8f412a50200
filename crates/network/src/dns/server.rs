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

/// How long one upstream gets to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL of our answers: 0, because replica health changes and round-robin needs fresh queries.
const ANSWER_TTL: u32 = 0;

/// A running DNS server; stops when dropped or on [`DnsServer::stop`].
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    registry: Arc<DnsRegistry>,
    upstreams: Vec<SocketAddr>,
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
    loop {
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%e, "DNS UDP receive");
                continue;
            }
        };
        let query = buf[..len].to_vec();
        let sock = sock.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(reply) = answer(&shared, &query).await {
                if let Err(e) = sock.send_to(&reply, peer).await {
                    tracing::debug!(%e, %peer, "DNS UDP reply");
                }
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%e, "DNS TCP accept");
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tcp_conn(stream, &shared).await {
                tracing::debug!(%e, "DNS TCP connection");
            }
        });
    }
}

/// RFC 1035 §4.2.2: each message is preceded by its 2-byte length.
async fn serve_tcp_conn(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let len = match stream.read_u16().await {
            Ok(l) => l as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut query = vec![0u8; len];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut query))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if let Some(reply) = answer(shared, &query).await {
            let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
            stream.write_u16(len).await?;
            stream.write_all(&reply[..len as usize]).await?;
        }
    }
}

/// The reply to one query message, or `None` for garbage we cannot even echo an id for.
async fn answer(shared: &Shared, query: &[u8]) -> Option<Vec<u8>> {
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
        Err(_) => return None,
    };
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query {
        return Message::error_msg(msg.id(), msg.op_code(), ResponseCode::NotImp)
            .to_vec()
            .ok();
    }
    if let [q] = msg.queries() {
        let name = q.name().to_ascii();
        if let Some(ips) = shared.registry.lookup(&name) {
            return local_answer(&msg, &ips).to_vec().ok();
        }
    }
    match forward(&shared.upstreams, query, msg.id()).await {
        Some(reply) => Some(reply),
        None => Message::error_msg(msg.id(), msg.op_code(), ResponseCode::ServFail)
            .to_vec()
            .ok(),
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

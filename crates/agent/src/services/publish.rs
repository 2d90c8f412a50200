//! Published ports of services: the daemon listens on `0.0.0.0:PUBLISH` and forwards each
//! connection (TCP) or each client's datagrams (UDP) to one of the service's healthy replicas,
//! round-robin.
//!
//! Why a forwarder in the daemon instead of the CNI `portmap` DNAT rules that `run -p` uses: a
//! DNAT rule points at ONE container, but a service has several replicas, and during a rolling
//! update (start-first) the old and the new replica run side by side. Two containers cannot own
//! one host port, so with DNAT a published service could neither have `replicas > 1` nor be
//! updated without a gap. One listener per published port that follows the healthy-replica list
//! (the same list the service's DNS name answers) gives what the spec promises: the port is
//! balanced over the replicas, an unhealthy or stopping replica gets no new connections, and a
//! rollout never closes the port. The cost is a userland copy per connection (like
//! `docker-proxy`) and that the port is closed while the daemon is down.
//!
//! Containers reach these ports too (through the host's addresses), so each port caps what
//! its clients can hold ([`PublishLimits`], config `published_ports`): concurrent connections
//! (UDP: client associations) in total and per client address, all drawing on the daemon's
//! descriptor budget for container-reachable listeners; idle connections are closed; accept
//! errors back off and repeated log lines are rate-limited (`zlayer_network::listen`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use zlayer_network::listen::{
    accept_with_backoff, relay, AcceptBackoff, ConnGate, ConnLimits, ConnPermit, LogLimiter,
    RelayTimeouts,
};
use zlayer_spec::{Endpoint, Protocol};

use super::key::ServiceKey;

/// How long a connection attempt to one replica may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A UDP client's association with a replica ends after this long without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// What each published port lets its clients hold (config `published_ports`, see
/// docs/network.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishLimits {
    /// Concurrent TCP connections (or UDP client associations) of one published port.
    pub max_connections: usize,
    /// Of those, from one client address.
    pub max_connections_per_client: usize,
    /// A TCP connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// A TCP connection is closed this long after it was accepted (`None`: never), busy or
    /// not.
    pub max_lifetime: Option<Duration>,
}

impl Default for PublishLimits {
    /// 4096 connections, 256 per client, closed after an idle hour, no total limit: as
    /// `docker-proxy` the forwarder carries long-lived streams (databases, websockets), which
    /// a total limit would cut; the caps are what bound the daemon's descriptors.
    fn default() -> Self {
        PublishLimits {
            max_connections: 4096,
            max_connections_per_client: 256,
            idle_timeout: Duration::from_secs(3600),
            max_lifetime: None,
        }
    }
}

impl PublishLimits {
    fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_total: self.max_connections,
            max_per_client: self.max_connections_per_client,
        }
    }
}

/// Where a published port's traffic goes: the healthy replicas' addresses and the container
/// port. Shared between the listener task and the supervisor, which updates it.
#[derive(Debug, Default)]
struct Backends {
    ips: RwLock<Vec<Ipv4Addr>>,
    port: AtomicU16,
    next: AtomicUsize,
}

impl Backends {
    /// The replicas to try for one new connection: all of them, starting at the next one in
    /// round-robin order.
    fn order(&self) -> Vec<SocketAddr> {
        let ips = self.ips.read();
        if ips.is_empty() {
            return Vec::new();
        }
        let port = self.port.load(Ordering::Relaxed);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % ips.len();
        (0..ips.len())
            .map(|i| SocketAddr::from((ips[(start + i) % ips.len()], port)))
            .collect()
    }
}

/// Why one host port of a service could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PortProblem {
    #[error("host port {port}/{proto} is already published by service {owner}")]
    OtherService {
        port: u16,
        proto: Protocol,
        owner: ServiceKey,
    },
    /// Held by something that is not a service (a `run -p` container).
    #[error("host port {port}/{proto} is already published by {owner}")]
    Taken {
        port: u16,
        proto: Protocol,
        owner: String,
    },
    #[error("cannot publish host port {port}/{proto}: {source}")]
    Bind {
        port: u16,
        proto: Protocol,
        source: std::io::Error,
    },
}

/// Every port of a service that could not be published (the others are set up), in the
/// order of their messages.
#[derive(Debug, thiserror::Error)]
#[error("{}", join(.0))]
pub struct PublishError(pub Vec<PortProblem>);

fn join(problems: &[PortProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One published port and the service that owns it.
struct Published {
    key: ServiceKey,
    backends: Arc<Backends>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Published {
    fn drop(&mut self) {
        // Ends the accept loop, which closes the listening socket.
        self.task.abort();
    }
}

/// The published ports of all services, keyed by host port and protocol.
#[derive(Default)]
pub struct Publisher {
    ports: Mutex<HashMap<(u16, Protocol), Published>>,
    limits: RwLock<PublishLimits>,
}

impl Publisher {
    /// Sets the limits of ports opened from now on (the daemon calls it once, at start).
    pub fn set_limits(&self, limits: PublishLimits) {
        *self.limits.write() = limits;
    }

    /// The `deployment/service` publishing `port`, if one does.
    pub fn owner_of(&self, port: u16, protocol: Protocol) -> Option<String> {
        self.ports
            .lock()
            .get(&(port, protocol))
            .map(|p| p.key.to_string())
    }

    /// Makes the service's listeners match its endpoints: binds new published ports, updates
    /// container ports, closes ports it no longer publishes. `taken` tells whether another
    /// owner (a `run -p` container) holds a port this service wants. Must run inside the
    /// tokio runtime. On errors the other ports are still set up; the error lists each port.
    pub fn sync(
        &self,
        key: &ServiceKey,
        endpoints: &[Endpoint],
        taken: impl Fn(u16, Protocol) -> Option<String>,
    ) -> Result<(), PublishError> {
        let mut ports = self.ports.lock();
        let mine = |p: &Published| &p.key == key;
        let wanted: HashMap<(u16, Protocol), u16> = endpoints
            .iter()
            .filter_map(|e| e.publish.map(|h| ((h, e.protocol), e.port)))
            .collect();
        ports.retain(|k, p| !mine(p) || wanted.contains_key(k));
        let mut problems = Vec::new();
        for (&(host, proto), &ctr) in &wanted {
            match ports.get(&(host, proto)) {
                Some(p) if mine(p) => p.backends.port.store(ctr, Ordering::Relaxed),
                Some(p) => problems.push(PortProblem::OtherService {
                    port: host,
                    proto,
                    owner: p.key.clone(),
                }),
                None => {
                    if let Some(owner) = taken(host, proto) {
                        problems.push(PortProblem::Taken {
                            port: host,
                            proto,
                            owner,
                        });
                        continue;
                    }
                    let backends = Arc::new(Backends::default());
                    backends.port.store(ctr, Ordering::Relaxed);
                    let limits = *self.limits.read();
                    match listen(host, proto, Arc::clone(&backends), limits) {
                        Ok(task) => {
                            tracing::info!(
                                deployment = %key.deployment,
                                service = %key.service,
                                "publishing {host}/{proto} -> replicas' port {ctr}"
                            );
                            ports.insert(
                                (host, proto),
                                Published {
                                    key: key.clone(),
                                    backends,
                                    task,
                                },
                            );
                        }
                        Err(source) => problems.push(PortProblem::Bind {
                            port: host,
                            proto,
                            source,
                        }),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.sort_by_cached_key(ToString::to_string);
            Err(PublishError(problems))
        }
    }

    /// The service's open published ports in docker's form, `0.0.0.0:8080->80/tcp`, sorted.
    pub fn ports_of(&self, key: &ServiceKey) -> Vec<String> {
        let mut v: Vec<(u16, Protocol, u16)> = self
            .ports
            .lock()
            .iter()
            .filter(|(_, p)| &p.key == key)
            .map(|(&(host, proto), p)| (host, proto, p.backends.port.load(Ordering::Relaxed)))
            .collect();
        v.sort_by_key(|&(host, proto, _)| (host, proto == Protocol::Udp));
        v.into_iter()
            .map(|(host, proto, ctr)| format!("0.0.0.0:{host}->{ctr}/{proto}"))
            .collect()
    }

    /// Points the service's published ports at these replica addresses (its healthy ones).
    pub fn set_backends(&self, key: &ServiceKey, ips: &[Ipv4Addr]) {
        for p in self.ports.lock().values() {
            if &p.key == key {
                *p.backends.ips.write() = ips.to_vec();
            }
        }
    }

    /// Closes the service's published ports.
    pub fn remove_service(&self, key: &ServiceKey) {
        self.ports.lock().retain(|_, p| &p.key != key);
    }

    /// Closes every published port of a deployment.
    pub fn remove_deployment(&self, deployment: &str) {
        self.ports
            .lock()
            .retain(|_, p| p.key.deployment != deployment);
    }
}

/// Binds `0.0.0.0:port` (all addresses, as `run -p` and docker do) and starts its forwarding
/// task.
fn listen(
    port: u16,
    proto: Protocol,
    backends: Arc<Backends>,
    limits: PublishLimits,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let in_use = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                format!("another process on this node listens on it ({e})"),
            )
        } else {
            e
        }
    };
    match proto {
        Protocol::Tcp => {
            // std's bind sets SO_REUSEADDR, so a restarted daemon can take the port back while
            // old connections linger in TIME_WAIT.
            let l = std::net::TcpListener::bind(addr).map_err(in_use)?;
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            Ok(tokio::spawn(tcp_loop(l, backends, limits)))
        }
        Protocol::Udp => {
            let s = std::net::UdpSocket::bind(addr).map_err(in_use)?;
            s.set_nonblocking(true)?;
            let s = UdpSocket::from_std(s)?;
            Ok(tokio::spawn(udp_loop(Arc::new(s), backends, limits)))
        }
    }
}

async fn tcp_loop(listener: TcpListener, backends: Arc<Backends>, limits: PublishLimits) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Two descriptors per connection: the client's and the replica's.
    let gate = ConnGate::new(limits.conn_limits(), 2);
    let timeouts = RelayTimeouts {
        idle: limits.idle_timeout,
        lifetime: limits.max_lifetime,
    };
    let mut backoff = AcceptBackoff::default();
    let (accept_errors, refusals) = (LogLimiter::default(), LogLimiter::default());
    let what = format!("published port {port}/tcp");
    loop {
        let (client, peer) =
            accept_with_backoff(&listener, &mut backoff, &accept_errors, &what).await;
        let permit = match gate.try_admit(peer.ip()) {
            Ok(p) => p,
            Err(refusal) => {
                if let Some(suppressed) = refusals.allow() {
                    tracing::warn!(%peer, suppressed, "{what}: connection refused: {refusal}");
                }
                continue;
            }
        };
        let backends = Arc::clone(&backends);
        tokio::spawn(async move {
            let _permit = permit;
            let Some(upstream) = connect_any(&backends).await else {
                tracing::debug!(%peer, "published port: no healthy replica accepted the connection");
                return;
            };
            match relay(client, upstream, timeouts).await {
                Ok(end) => tracing::trace!(%peer, ?end, "published port: connection ended"),
                Err(e) => tracing::trace!(%peer, "published port: connection failed: {e}"),
            }
        });
    }
}

/// Connects to the first replica (in round-robin order) that accepts.
async fn connect_any(backends: &Backends) -> Option<TcpStream> {
    for addr in backends.order() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Ok(Err(e)) => tracing::debug!(%addr, "published port: connect: {e}"),
            Err(_) => tracing::debug!(%addr, "published port: connect timed out"),
        }
    }
    None
}

/// UDP: each client address is associated with one replica (picked round-robin on its first
/// datagram) through a socket of its own, so the replica's answers go back to that client.
/// Associations are capped like TCP connections (each holds a socket); datagrams of clients
/// over the cap are dropped.
async fn udp_loop(socket: Arc<UdpSocket>, backends: Arc<Backends>, limits: PublishLimits) {
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
    let gate = ConnGate::new(limits.conn_limits(), 1);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    let mut backoff = AcceptBackoff::default();
    let (errors, refusals) = (LogLimiter::default(), LogLimiter::default());
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => {
                backoff.succeeded();
                r
            }
            Err(e) => {
                let pause = backoff.failed();
                if let Some(suppressed) = errors.allow() {
                    tracing::warn!(suppressed, "published port {port}/udp: receive: {e}");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let existing = sessions.lock().get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(target) = backends.order().into_iter().next() else {
                    continue;
                };
                let permit = match gate.try_admit(client.ip()) {
                    Ok(p) => p,
                    Err(refusal) => {
                        if let Some(suppressed) = refusals.allow() {
                            tracing::warn!(
                                %client,
                                suppressed,
                                "published port {port}/udp: datagram dropped: {refusal}"
                            );
                        }
                        continue;
                    }
                };
                let Ok(u) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                sessions.lock().insert(client, Arc::clone(&u));
                tokio::spawn(udp_replies(
                    Arc::clone(&u),
                    Arc::clone(&socket),
                    client,
                    Arc::clone(&sessions),
                    permit,
                ));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Relays a replica's answers to its client until the association is idle.
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    _permit: ConnPermit,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        let _ = socket.send_to(&buf[..n], client).await;
    }
    sessions.lock().remove(&client);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn key(d: &str, s: &str) -> ServiceKey {
        ServiceKey::new(d, s)
    }

    fn ep(port: u16, publish: u16) -> Endpoint {
        Endpoint {
            name: format!("tcp-{port}"),
            port,
            protocol: Protocol::Tcp,
            publish: Some(publish),
        }
    }

    /// A loopback "replica" that answers every connection with `tag`.
    async fn replica(tag: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                s.write_all(tag.as_bytes()).await.unwrap();
            }
        });
        port
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn fetch(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn forwards_round_robin_follows_backends_and_reports_conflicts() {
        let ctr = replica("one").await;
        let host = free_port();
        let p = Publisher::default();
        p.sync(&key("d", "web"), &[ep(ctr, host)], |_, _| None)
            .unwrap();
        assert_eq!(p.owner_of(host, Protocol::Tcp).as_deref(), Some("d/web"));
        assert_eq!(
            p.ports_of(&key("d", "web")),
            [format!("0.0.0.0:{host}->{ctr}/tcp")]
        );
        // No healthy replica: the connection is closed without data.
        assert_eq!(fetch(host).await, "");
        // Two "replicas" on different loopback addresses, same port.
        p.set_backends(
            &key("d", "web"),
            &[Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 1)],
        );
        assert_eq!(fetch(host).await, "one");
        assert_eq!(fetch(host).await, "one");
        // A dead backend is skipped.
        p.set_backends(
            &key("d", "web"),
            &[Ipv4Addr::new(127, 0, 0, 9), Ipv4Addr::LOCALHOST],
        );
        for _ in 0..3 {
            assert_eq!(fetch(host).await, "one");
        }
        // Another service cannot take the port; `taken` is consulted for new ports.
        let err = p
            .sync(&key("d", "api"), &[ep(80, host)], |_, _| None)
            .unwrap_err();
        assert!(
            matches!(&err.0[..], [PortProblem::OtherService { owner, .. }] if owner == &key("d", "web")),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("already published by service d/web"),
            "{err}"
        );
        let other = free_port();
        let err = p
            .sync(&key("d", "api"), &[ep(80, other)], |_, _| {
                Some("container x".into())
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("already published by container x"),
            "{err}"
        );
        // A port held by a foreign socket.
        let foreign = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let fport = foreign.local_addr().unwrap().port();
        let err = p
            .sync(&key("e", "x"), &[ep(80, fport)], |_, _| None)
            .unwrap_err();
        assert!(matches!(&err.0[..], [PortProblem::Bind { .. }]), "{err}");
        assert!(err.to_string().contains("another process"), "{err}");
        // Dropping the endpoint closes the port.
        p.sync(&key("d", "web"), &[], |_, _| None).unwrap();
        assert_eq!(p.owner_of(host, Protocol::Tcp), None);
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::net::TcpListener::bind(("0.0.0.0", host)).expect("port released");
    }

    #[tokio::test]
    async fn connections_are_capped_per_client_and_idle_ones_closed() {
        // A replica that greets and then keeps the connection open.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ctr = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"hi").await;
                held.push(s);
            }
        });
        let host = free_port();
        let p = Publisher::default();
        p.set_limits(PublishLimits {
            max_connections: 100,
            max_connections_per_client: 2,
            idle_timeout: Duration::from_millis(700),
            max_lifetime: None,
        });
        p.sync(&key("d", "web"), &[ep(ctr, host)], |_, _| None)
            .unwrap();
        p.set_backends(&key("d", "web"), &[Ipv4Addr::LOCALHOST]);
        let mut greeted = 0;
        let mut conns = Vec::new();
        for _ in 0..5 {
            let mut s = TcpStream::connect(("127.0.0.1", host)).await.unwrap();
            let mut buf = [0u8; 2];
            let got = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("a refused connection is closed at once, an admitted one greeted");
            if matches!(got, Ok(2)) {
                greeted += 1;
            }
            conns.push(s);
        }
        assert_eq!(greeted, 2, "two connections per client address");
        // The admitted ones are closed once idle, which frees their places.
        for s in conns.iter_mut().take(2) {
            let mut rest = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
                .await
                .expect("idle connection closed");
            assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fetch_first(host).await, "hi");
    }

    /// The first two bytes the published port sends.
    async fn fetch_first(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn each_connection_starts_at_the_next_replica() {
        let b = Backends::default();
        let ips: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        *b.ips.write() = ips.clone();
        b.port.store(80, Ordering::Relaxed);
        let firsts: Vec<SocketAddr> = (0..4).map(|_| b.order()[0]).collect();
        let want: Vec<SocketAddr> = [0, 1, 2, 0]
            .iter()
            .map(|&i| SocketAddr::from((ips[i], 80)))
            .collect();
        assert_eq!(firsts, want);
        assert_eq!(b.order().len(), 3, "the others are fallbacks");
    }

    #[tokio::test]
    async fn udp_answers_go_back_to_the_client() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ctr = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 100];
            loop {
                let (n, from) = echo.recv_from(&mut buf).await.unwrap();
                echo.send_to(&buf[..n], from).await.unwrap();
            }
        });
        let host = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Publisher::default();
        let mut e = ep(ctr, host);
        e.protocol = Protocol::Udp;
        p.sync(&key("d", "dns"), &[e], |_, _| None).unwrap();
        p.set_backends(&key("d", "dns"), &[Ipv4Addr::LOCALHOST]);
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"ping", ("127.0.0.1", host)).await.unwrap();
        let mut buf = [0u8; 10];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), c.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
    }
}

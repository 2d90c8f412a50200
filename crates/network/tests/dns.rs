//! The per-network DNS server, queried from inside real sandboxes, in a fresh namespace.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use zlayer_network::dns::{DnsRegistry, DnsServer};
use zlayer_network::*;

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(4242).set_recursion_desired(true);
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

fn a_records(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&query(name, qtype), server).unwrap();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.id(), 4242);
    reply
}

fn ask_tcp(server: SocketAddr, name: &str) -> Message {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = query(name, RecordType::A);
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn nslookup(netns: &std::path::Path, name: &str, server: &str) -> (bool, String) {
    let out = in_ns(
        netns,
        &["timeout", "5", "busybox", "nslookup", name, server],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

netns_test!(dns_answers_service_names_round_robin_and_forwards, {
    let env = Env::new();
    let mgr = env.manager();
    let net = mgr.ensure_default().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // The host's resolvers (the test's stand-in resolv.conf) are what the daemon would forward to.
    assert_eq!(
        mgr.dns_upstreams(),
        ["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
    );
    // An "upstream resolver" on loopback: another instance, knowing one outside name.
    let upstream_table = Arc::new(DnsRegistry::new());
    upstream_table.set_service("example", "ext", vec![Ipv4Addr::new(192, 0, 2, 77)]);
    let upstream = rt
        .block_on(DnsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            upstream_table,
            vec![],
        ))
        .unwrap();

    // The network's server starts before the bridge exists (first ADD creates it): freebind.
    let listen = mgr.dns_listen_addr(DEFAULT_NETWORK).unwrap();
    assert_eq!(listen, SocketAddr::new(net.gateway.into(), 53));
    let table = Arc::new(DnsRegistry::new());
    let server = rt
        .block_on(DnsServer::start(
            listen,
            table.clone(),
            vec![upstream.local_addr()],
        ))
        .unwrap();

    let mut ips = Vec::new();
    for id in ["web-1", "web-2"] {
        ips.push(
            mgr.create_sandbox(&SandboxRequest::new(
                id,
                NetworkMode::Bridge(DEFAULT_NETWORK.into()),
            ))
            .unwrap()
            .ipv4()
            .unwrap(),
        );
    }
    let mut req = SandboxRequest::new("client", NetworkMode::Bridge(DEFAULT_NETWORK.into()));
    req.dns_search = vec!["demo".into()];
    let client = mgr.create_sandbox(&req).unwrap();
    let client_ns = client.netns_path.clone().unwrap();
    assert!(client
        .resolv_conf
        .contains(&format!("nameserver {}\n", net.gateway)));
    assert!(
        client.resolv_conf.contains("search demo\n"),
        "{}",
        client.resolv_conf
    );
    assert_eq!(
        mgr.resolv_conf_for(DEFAULT_NETWORK, &["demo".into()])
            .unwrap(),
        client.resolv_conf
    );
    table.set_service("demo", "web", ips.clone());
    let gw = net.gateway.to_string();

    // From inside a container, by short and qualified name.
    for name in ["web", "web.demo"] {
        let (ok, out) = nslookup(&client_ns, name, &gw);
        assert!(ok, "nslookup {name}: {out}");
        for ip in &ips {
            assert!(out.contains(&ip.to_string()), "nslookup {name}: {out}");
        }
    }
    // Other names are forwarded upstream.
    let (ok, out) = nslookup(&client_ns, "ext.example", &gw);
    assert!(ok && out.contains("192.0.2.77"), "forwarded lookup: {out}");
    // Unknown everywhere: a failure answer, not a hang.
    let reply = ask_udp(listen, "nothing.invalid.", RecordType::A);
    assert_eq!(reply.response_code(), ResponseCode::ServFail);

    // Round robin: the first address rotates from query to query.
    let firsts: Vec<Ipv4Addr> = (0..4)
        .map(|_| a_records(&ask_udp(listen, "web.demo.", RecordType::A))[0])
        .collect();
    assert_eq!(firsts, [ips[0], ips[1], ips[0], ips[1]]);
    // AAAA for a service name: empty NOERROR, answered locally.
    let reply = ask_udp(listen, "web.", RecordType::AAAA);
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.answers().is_empty());
    // TCP works too.
    assert_eq!(a_records(&ask_tcp(listen, "web.demo.")).len(), 2);

    // Only healthy replicas: the daemon drops web-2 from the table.
    table.set_service("demo", "web", vec![ips[0]]);
    let (ok, out) = nslookup(&client_ns, "web", &gw);
    assert!(
        ok && out.contains(&ips[0].to_string()) && !out.contains(&ips[1].to_string()),
        "{out}"
    );

    drop(server);
    drop(upstream);
    for id in ["web-1", "web-2", "client"] {
        mgr.destroy_sandbox(id).unwrap();
    }
});

/// Whether the server closed `s` at once (EOF or reset within 300 ms) rather than keeping it.
fn closed_at_once(s: &TcpStream) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let mut reader = s;
    match reader.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), WouldBlock | TimedOut),
    }
}

netns_test!(
    dns_tcp_connections_are_capped_per_client_and_idle_ones_closed,
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let table = Arc::new(DnsRegistry::new());
        table.set_service("demo", "web", vec![Ipv4Addr::new(10, 0, 0, 5)]);
        let server = rt
            .block_on(DnsServer::start(
                "127.0.0.1:0".parse().unwrap(),
                table,
                vec![],
            ))
            .unwrap();
        let addr = server.local_addr();
        // One client address: 16 connections are kept, the rest closed at once.
        let opened = std::time::Instant::now();
        let conns: Vec<TcpStream> = (0..20)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let refused = conns.iter().filter(|s| closed_at_once(s)).count();
        assert_eq!(refused, 4, "16 connections per client address");
        // Another client address is still served.
        let other =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        other
            .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap();
        other.connect(&addr.into()).unwrap();
        let mut other: TcpStream = other.into();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let q = query("web.demo.", RecordType::A);
        other.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        other.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        other.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        other.read_exact(&mut buf).unwrap();
        assert_eq!(a_records(&Message::from_vec(&buf).unwrap()).len(), 1);
        // Idle connections are closed 10 s after their last query (here: after accept).
        let mut held = conns
            .iter()
            .find(|s| !closed_at_once(s))
            .expect("a kept connection");
        held.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(held.read(&mut b), Ok(0) | Err(_)));
        let waited = opened.elapsed();
        assert!(
            waited >= Duration::from_secs(9) && waited < Duration::from_secs(16),
            "closed {waited:?} after it was opened"
        );
        drop(server);
    }
);

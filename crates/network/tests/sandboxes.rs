//! Sandboxes on real CNI bridge networks, each test inside its own network namespace.

mod common;

use std::collections::HashSet;
use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use common::*;
use zlayer_network::*;

fn bridge(id: &str, net: &str) -> SandboxRequest {
    SandboxRequest::new(id, NetworkMode::Bridge(net.into()))
}

netns_test!(two_sandboxes_reach_each_other_and_del_releases_ips, {
    let env = Env::new();
    let mgr = env.manager();
    let net = mgr.ensure_default().unwrap();
    assert_eq!(net.name, DEFAULT_NETWORK);
    assert_eq!(net.subnet.to_string(), DEFAULT_SUBNET);

    let a = mgr.create_sandbox(&bridge("sa", DEFAULT_NETWORK)).unwrap();
    let b = mgr.create_sandbox(&bridge("sb", DEFAULT_NETWORK)).unwrap();
    let (ns_a, ns_b) = (a.netns_path.clone().unwrap(), b.netns_path.clone().unwrap());
    let ip_a = a.ipv4().unwrap();
    let ip_b = b.ipv4().unwrap();
    assert!(
        net.subnet.contains(&ip_a) && net.subnet.contains(&ip_b),
        "{a:?} {b:?}"
    );
    assert_ne!(ip_a, ip_b);
    assert_eq!(a.gateway, Some(net.gateway.into()));
    assert!(
        a.resolv_conf
            .contains(&format!("nameserver {}", net.gateway)),
        "{}",
        a.resolv_conf
    );

    // ICMP and TCP both ways through the bridge.
    assert!(ping(&ns_a, &ip_b.to_string()));
    assert!(ping(&ns_b, &ip_a.to_string()));
    let www = env.www("hello-from-b");
    let _httpd = httpd_in_ns(&ns_b, &www, 8080);
    assert_eq!(
        wget(Some(&ns_a), &format!("http://{ip_b}:8080/")).as_deref(),
        Some("hello-from-b")
    );

    // CHECK passes on a healthy attachment; the record is listed.
    mgr.check_sandbox("sa").unwrap();
    assert_eq!(mgr.list_sandboxes().unwrap().len(), 2);
    assert_eq!(env.ipam_leases(DEFAULT_NETWORK), {
        let mut v = vec![ip_a.to_string(), ip_b.to_string()];
        v.sort();
        v
    });

    // Removing a network in use is refused, naming the users.
    let err = mgr.remove_network(DEFAULT_NETWORK).unwrap_err().to_string();
    assert!(err.contains("sa") && err.contains("sb"), "{err}");

    // CHECK notices a broken attachment (the interface vanished); destroy still cleans up.
    assert!(in_ns(&ns_a, &["ip", "link", "del", "eth0"])
        .status
        .success());
    let err = mgr.check_sandbox("sa").unwrap_err().to_string();
    assert!(err.contains("CHECK") && err.contains("sa"), "{err}");
    assert!(mgr.destroy_sandbox("sa").unwrap());
    assert!(mgr.destroy_sandbox("sb").unwrap());
    assert!(
        !mgr.destroy_sandbox("sb").unwrap(),
        "second destroy is a no-op"
    );
    assert!(
        env.ipam_leases(DEFAULT_NETWORK).is_empty(),
        "DEL released the addresses"
    );
    assert!(!ns_a.exists() && !ns_b.exists());
    assert!(mgr.list_sandboxes().unwrap().is_empty());
    let nat = run(&["iptables-save", "-t", "nat"]);
    assert!(
        !nat.contains("id: \"sa\""),
        "portmap/masquerade rules of sa left: {nat}"
    );
});

netns_test!(
    published_tcp_port_reachable_on_localhost_and_conflicts_rejected,
    {
        let env = Env::new();
        let mgr = env.manager();
        mgr.ensure_default().unwrap();
        let mut req = bridge("web", DEFAULT_NETWORK);
        req.ports.push("18080:80".parse().unwrap());
        let web = mgr.create_sandbox(&req).unwrap();
        assert_eq!(web.ports, vec![PortMapping::tcp(18080, 80)]);
        let ns = web.netns_path.clone().unwrap();
        let _httpd = httpd_in_ns(&ns, &env.www("published"), 80);
        mgr.check_sandbox("web").unwrap();

        // From the host side of the namespace, via loopback and via the bridge address.
        assert_eq!(
            wget(None, "http://127.0.0.1:18080/").as_deref(),
            Some("published")
        );
        let gw = web.gateway.unwrap();
        assert_eq!(
            wget(None, &format!("http://{gw}:18080/")).as_deref(),
            Some("published")
        );
        // Hairpin: the container itself through its own published port.
        assert_eq!(
            wget(Some(&ns), &format!("http://{gw}:18080/")).as_deref(),
            Some("published")
        );
        // From another container on the same network through the host port.
        let other = mgr
            .create_sandbox(&bridge("other", DEFAULT_NETWORK))
            .unwrap();
        let other_ns = other.netns_path.clone().unwrap();
        assert_eq!(
            wget(Some(&other_ns), &format!("http://{gw}:18080/")).as_deref(),
            Some("published")
        );

        // Same host port again: a clear error, before any namespace or CNI call.
        let mut dup = bridge("dup", DEFAULT_NETWORK);
        dup.ports.push("18080:81".parse().unwrap());
        let err = mgr.create_sandbox(&dup).unwrap_err();
        assert!(matches!(err, NetworkError::PortConflict { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("18080") && msg.contains("\"web\""), "{msg}");
        assert!(!env.opts.netns_dir.join("dup").exists());
        assert!(mgr.sandbox("dup").unwrap().is_none());

        // A host process already listening on the port.
        let busy = TcpListener::bind("127.0.0.1:18081").unwrap();
        let mut taken = bridge("taken", DEFAULT_NETWORK);
        taken.ports.push("18081:80".parse().unwrap());
        let msg = mgr.create_sandbox(&taken).unwrap_err().to_string();
        assert!(msg.contains("18081") && msg.contains("host"), "{msg}");
        drop(busy);

        // After destroy the port is free again and no longer forwarded.
        mgr.destroy_sandbox("web").unwrap();
        assert!(wget(None, "http://127.0.0.1:18080/").is_none());
        dup.id = "dup2".into();
        mgr.create_sandbox(&dup).unwrap();
        for id in ["dup2", "other"] {
            mgr.destroy_sandbox(id).unwrap();
        }
    }
);

/// A UDP echo server bound inside the sandbox namespace, on a thread that entered it with setns
/// (only that thread changes namespace).
fn udp_echo_in_ns(netns: &Path, port: u16) -> std::thread::JoinHandle<()> {
    let ns = fs::File::open(netns).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        // Echo until a "quit" datagram or timeout.
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if &buf[..n] == b"quit" {
                break;
            }
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            sock.send_to(&reply, peer).unwrap();
        }
    });
    ready_rx.recv().unwrap();
    h
}

netns_test!(published_udp_port_reachable_on_localhost, {
    let env = Env::new();
    let mgr = env.manager();
    mgr.ensure_default().unwrap();
    let mut req = bridge("dns-like", DEFAULT_NETWORK);
    req.ports.push("15353:5353/udp".parse().unwrap());
    let info = mgr.create_sandbox(&req).unwrap();
    let ns = info.netns_path.clone().unwrap();
    let echo = udp_echo_in_ns(&ns, 5353);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client.send_to(b"ping", "127.0.0.1:15353").unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("UDP reply through the published port");
    assert_eq!(&buf[..n], b"echo:ping");
    // And directly to the sandbox address (from a socket not bound to loopback).
    let client = UdpSocket::bind("0.0.0.0:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client
        .send_to(b"direct", (info.ipv4().unwrap(), 5353))
        .unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"echo:direct");
    client
        .send_to(b"quit", (info.ipv4().unwrap(), 5353))
        .unwrap();
    echo.join().unwrap();
    mgr.destroy_sandbox("dns-like").unwrap();
});

netns_test!(networks_are_isolated_from_each_other, {
    let env = Env::new();
    let mgr = env.manager();
    mgr.ensure_default().unwrap();
    let front = mgr.create_network("front", None).unwrap();
    let back = mgr.create_network("back", None).unwrap();
    assert_ne!(front.subnet, back.subnet);
    assert_eq!(
        front.subnet.to_string(),
        "10.224.0.0/16",
        "first /16 of the pool"
    );
    // Overlaps are refused with the owner named.
    let msg = mgr
        .create_network("clash", Some("10.224.128.0/17".parse().unwrap()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("\"front\""), "{msg}");
    let names: Vec<String> = mgr
        .list_networks()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["back", "front", "zlayer0"]);

    let f1 = mgr.create_sandbox(&bridge("f1", "front")).unwrap();
    let f2 = mgr.create_sandbox(&bridge("f2", "front")).unwrap();
    let mut breq = bridge("b1", "back");
    breq.ports.push("18090:80".parse().unwrap());
    let b1 = mgr.create_sandbox(&breq).unwrap();
    let ns_f1 = f1.netns_path.clone().unwrap();
    let ns_b1 = b1.netns_path.clone().unwrap();
    let _httpd_b = httpd_in_ns(&ns_b1, &env.www("back-web"), 80);
    let _httpd_f = httpd_in_ns(&f2.netns_path.clone().unwrap(), &env.www("front-web"), 80);
    let ip_f2 = f2.ipv4().unwrap();
    let ip_b1 = b1.ipv4().unwrap();

    // Same network: reachable.
    assert!(ping(&ns_f1, &ip_f2.to_string()));
    assert_eq!(
        wget(Some(&ns_f1), &format!("http://{ip_f2}/")).as_deref(),
        Some("front-web")
    );
    // Other network: not reachable, either way, by ICMP or TCP.
    assert!(
        !ping(&ns_f1, &ip_b1.to_string()),
        "front reached back by IP"
    );
    assert!(
        !ping(&ns_b1, &ip_f2.to_string()),
        "back reached front by IP"
    );
    assert_eq!(wget(Some(&ns_f1), &format!("http://{ip_b1}/")), None);
    // But another network's *published* port, via the host address, is usable.
    let gw_front = f1.gateway.unwrap();
    assert_eq!(
        wget(Some(&ns_f1), &format!("http://{gw_front}:18090/")).as_deref(),
        Some("back-web")
    );

    for id in ["f1", "f2", "b1"] {
        mgr.destroy_sandbox(id).unwrap();
    }
    mgr.remove_network("front").unwrap();
    mgr.remove_network("back").unwrap();
    assert!(matches!(
        mgr.network("front"),
        Err(NetworkError::NetworkNotFound(_))
    ));
    let rules = run(&["iptables-save", "-t", "filter"]);
    assert!(
        !rules.contains("-j DROP"),
        "isolation rules of removed networks left: {rules}"
    );
});

netns_test!(none_host_and_shared_modes, {
    let env = Env::new();
    let mgr = env.manager();
    mgr.ensure_default().unwrap();

    let none = mgr
        .create_sandbox(&SandboxRequest::new("lonely", NetworkMode::None))
        .unwrap();
    let ns = none.netns_path.clone().unwrap();
    let links = String::from_utf8(in_ns(&ns, &["ip", "-o", "link"]).stdout).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    assert!(ping(&ns, "127.0.0.1"));
    assert!(none.ips.is_empty());
    assert_eq!(none.resolv_conf, "nameserver 192.0.2.53\n");

    let mut bad = SandboxRequest::new("lonely2", NetworkMode::None);
    bad.ports.push("1000:1000".parse().unwrap());
    let msg = mgr.create_sandbox(&bad).unwrap_err().to_string();
    assert!(msg.contains("bridge mode"), "{msg}");

    let host = mgr
        .create_sandbox(&SandboxRequest::new("hosty", NetworkMode::Host))
        .unwrap();
    assert_eq!(host.netns_path, None);

    // A pod: the second sandbox shares the first's namespace and addresses.
    let owner = mgr.create_sandbox(&bridge("pod", DEFAULT_NETWORK)).unwrap();
    let member = mgr
        .create_sandbox(&SandboxRequest::new(
            "pod-sidecar",
            NetworkMode::Container("pod".into()),
        ))
        .unwrap();
    assert_eq!(member.netns_path, owner.netns_path);
    assert_eq!(member.ips, owner.ips);
    assert_eq!(member.shares_with.as_deref(), Some("pod"));
    let err = mgr.destroy_sandbox("pod").unwrap_err();
    assert!(err.to_string().contains("pod-sidecar"), "{err}");
    let err = mgr
        .create_sandbox(&SandboxRequest::new(
            "x",
            NetworkMode::Container("ghost".into()),
        ))
        .unwrap_err();
    assert!(matches!(err, NetworkError::SandboxNotFound(_)), "{err}");
    assert!(matches!(
        mgr.create_sandbox(&SandboxRequest::new("pod", NetworkMode::None)),
        Err(NetworkError::SandboxExists(_))
    ));

    for id in ["pod-sidecar", "pod", "hosty", "lonely"] {
        assert!(mgr.destroy_sandbox(id).unwrap(), "{id}");
    }
    assert!(zlayer_network::netns::list(&env.opts.netns_dir)
        .unwrap()
        .is_empty());
});

netns_test!(plugin_error_is_reported_clearly_and_rolled_back, {
    let env = Env::new();
    let mgr = env.manager();
    let net = mgr
        .create_network("broken", Some("10.230.0.0/16".parse().unwrap()))
        .unwrap();
    // Sabotage the conflist the way a bad hand edit would: a gateway outside the subnet.
    let text = fs::read_to_string(&net.conflist_path).unwrap();
    fs::write(
        &net.conflist_path,
        text.replace("\"gateway\": \"10.230.0.1\"", "\"gateway\": \"10.99.0.1\""),
    )
    .unwrap();
    let err = mgr.create_sandbox(&bridge("victim", "broken")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NetworkError::Cni(_)), "{msg}");
    assert!(
        msg.contains("bridge") && msg.contains("ADD") && msg.contains("\"broken\""),
        "{msg}"
    );
    assert!(
        msg.contains("10.99.0.1"),
        "the plugin's own message is kept: {msg}"
    );
    assert!(mgr.sandbox("victim").unwrap().is_none());
    assert!(!env.opts.netns_dir.join("victim").exists());
    assert!(env.ipam_leases("broken").is_empty());
});

netns_test!(leak_cleanup_after_simulated_crash, {
    let env = Env::new();
    {
        // "Daemon" one: creates sandboxes, then dies without destroying anything (the manager
        // keeps no in-memory state, so dropping it leaves exactly what a SIGKILL leaves).
        let mgr = env.manager();
        mgr.ensure_default().unwrap();
        for id in ["keep", "gone1", "gone2", "gone3"] {
            let mut req = bridge(id, DEFAULT_NETWORK);
            if id == "gone1" {
                req.ports.push("18100:80".parse().unwrap());
            }
            mgr.create_sandbox(&req).unwrap();
        }
        mgr.create_sandbox(&SandboxRequest::new("gone-none", NetworkMode::None))
            .unwrap();
        mgr.create_sandbox(&SandboxRequest::new(
            "keep-side",
            NetworkMode::Container("keep".into()),
        ))
        .unwrap();
    }
    // Crash between "forget the record" and "DEL": record gone, cache and lease remain.
    fs::remove_file(env.opts.state_dir.join("sandboxes/gone2.json")).unwrap();
    // Worse: record and cached result both lost; only host-local's lease tells.
    fs::remove_file(env.opts.state_dir.join("sandboxes/gone3.json")).unwrap();
    fs::remove_file(env.opts.state_dir.join("cni-results/zlayer0/gone3.json")).unwrap();
    // A record that came back empty (power loss without fsync).
    fs::write(env.opts.state_dir.join("sandboxes/gone-none.json"), "").unwrap();
    // A stray namespace file nobody knows about.
    zlayer_network::netns::create(&env.opts.netns_dir, "stray").unwrap();
    assert_eq!(env.ipam_leases(DEFAULT_NETWORK).len(), 4);

    let mgr = env.manager();
    mgr.ensure_default().unwrap();
    let live: HashSet<String> = ["keep-side".to_string()].into();
    let report = mgr.cleanup_leaks(&live).unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].contains("unreadable record"), "{report:?}");
    assert_eq!(report.sandboxes, ["gone1"]);
    let mut namespaces = report.namespaces.clone();
    namespaces.sort();
    assert_eq!(namespaces, ["gone-none", "gone2", "gone3", "stray"]);
    assert_eq!(report.addresses.len(), 1, "gone3's lease: {report:?}");

    // "keep" stays because its live sidecar shares it.
    let ids: Vec<String> = mgr
        .list_sandboxes()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["keep", "keep-side"]);
    let keep_ip = mgr.sandbox("keep").unwrap().unwrap().ipv4().unwrap();
    assert_eq!(env.ipam_leases(DEFAULT_NETWORK), [keep_ip.to_string()]);
    let ns_left = zlayer_network::netns::list(&env.opts.netns_dir).unwrap();
    assert_eq!(ns_left, ["keep"]);
    let nat = run(&["iptables-save", "-t", "nat"]);
    assert!(!nat.contains("18100") && !nat.contains("gone1"), "{nat}");
    mgr.check_sandbox("keep").unwrap();

    // Nothing live at all: everything goes.
    let report = mgr.cleanup_leaks(&HashSet::new()).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(mgr.list_sandboxes().unwrap().is_empty());
    assert!(env.ipam_leases(DEFAULT_NETWORK).is_empty());
});

/// Directory shared by `leak_cleanup_after_sigkill_mid_add` with its victim process.
const VICTIM_DIR: &str = "ZLAYER_NETWORK_TEST_VICTIM_DIR";

fn victim_opts(dir: &Path, hanging_plugins: bool) -> NetworkOptions {
    let mut opts = NetworkOptions::new(dir.join("cni"), dir.join("state"));
    if hanging_plugins {
        opts.plugin_dirs.insert(0, dir.join("plugins"));
    }
    opts
}

/// Not a test on its own: the "daemon" process that `leak_cleanup_after_sigkill_mid_add` starts
/// inside its namespace and kills with SIGKILL while it is in the middle of a CNI ADD. Run
/// directly (without the variable that test sets) it does nothing.
#[test]
#[ignore = "helper process of leak_cleanup_after_sigkill_mid_add"]
fn sigkill_victim_daemon() {
    let Some(dir) = std::env::var_os(VICTIM_DIR) else {
        eprintln!("helper process only; nothing to do");
        return;
    };
    let mgr = NetworkManager::open(victim_opts(Path::new(&dir), true)).unwrap();
    mgr.ensure_default().unwrap();
    let mut k1 = bridge("k1", DEFAULT_NETWORK);
    k1.ports.push("18200:80".parse().unwrap());
    mgr.create_sandbox(&k1).unwrap();
    mgr.create_sandbox(&bridge("k2", DEFAULT_NETWORK)).unwrap();
    // Hangs in the portmap plugin (bridge and host-local done) until killed.
    let mut k3 = bridge("k3", DEFAULT_NETWORK);
    k3.ports.push("18201:80".parse().unwrap());
    let _ = mgr.create_sandbox(&k3);
    panic!("k3's ADD should have hung until this process was killed");
}

netns_test!(leak_cleanup_after_sigkill_mid_add, {
    let env = Env::new();
    let dir = env.dir.path().to_path_buf();
    let marker = dir.join("hung-plugin.pid");
    fs::create_dir_all(dir.join("plugins")).unwrap();
    let wrapper = dir.join("plugins/portmap");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ] && [ \"$CNI_CONTAINERID\" = k3 ]; then\n  \
             echo $$ > {m}.tmp && mv {m}.tmp {m}\n  exec sleep 600\nfi\nexec /usr/lib/cni/portmap\n",
            m = marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut victim = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "sigkill_victim_daemon",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(VICTIM_DIR, &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(60), || marker.exists());
    victim.kill().unwrap(); // SIGKILL, by the PID we started
    victim.wait().unwrap();
    let plugin_pid: i32 = fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(plugin_pid),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();

    let opts = victim_opts(&dir, false);
    let leases = |opts: &NetworkOptions| -> usize {
        fs::read_dir(opts.state_dir.join("ipam").join(DEFAULT_NETWORK))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .parse::<std::net::IpAddr>()
                    .is_ok()
            })
            .count()
    };
    assert_eq!(leases(&opts), 3, "k3 got its address before the hang");
    let mgr = NetworkManager::open(opts.clone()).unwrap();
    mgr.ensure_default().unwrap();
    let report = mgr.cleanup_leaks(&["k1".to_string()].into()).unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    let mut removed = report.sandboxes.clone();
    removed.sort();
    assert_eq!(removed, ["k2", "k3"]);
    assert_eq!(leases(&opts), 1);
    assert_eq!(
        zlayer_network::netns::list(&opts.netns_dir).unwrap(),
        ["k1"]
    );
    let veths = run(&["ip", "-o", "link", "show", "type", "veth"]);
    assert_eq!(veths.lines().count(), 1, "only k1's veth is left: {veths}");
    let rules = run(&["iptables-save"]);
    assert!(
        !rules.contains("\"k2\"") && !rules.contains("\"k3\""),
        "{rules}"
    );
    assert!(
        rules.contains("18200"),
        "k1 is alive and keeps its published port"
    );
    mgr.check_sandbox("k1").unwrap();
    mgr.destroy_sandbox("k1").unwrap();
});

netns_test!(concurrent_creates_and_destroys_on_a_fresh_network, {
    let env = Env::new();
    let mgr = std::sync::Arc::new(env.manager());
    mgr.ensure_default().unwrap();
    // The bridge does not exist yet: the first ADDs race to create it.
    let ids: Vec<String> = (0..6).map(|i| format!("par-{i}")).collect();
    let handles: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (mgr, id) = (mgr.clone(), id.clone());
            std::thread::spawn(move || {
                let mut req = bridge(&id, DEFAULT_NETWORK);
                req.ports.push(PortMapping::tcp(18300 + i as u16, 80));
                mgr.create_sandbox(&req).unwrap()
            })
        })
        .collect();
    let infos: Vec<SandboxInfo> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ips: HashSet<_> = infos.iter().map(|i| i.ipv4().unwrap()).collect();
    assert_eq!(ips.len(), ids.len(), "distinct addresses: {ips:?}");
    let first = infos[0].netns_path.clone().unwrap();
    for info in &infos[1..] {
        assert!(
            ping(&first, &info.ipv4().unwrap().to_string()),
            "{}",
            info.id
        );
    }
    let handles: Vec<_> = ids
        .iter()
        .map(|id| {
            let (mgr, id) = (mgr.clone(), id.clone());
            std::thread::spawn(move || assert!(mgr.destroy_sandbox(&id).unwrap()))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(env.ipam_leases(DEFAULT_NETWORK).is_empty());
    assert!(zlayer_network::netns::list(&env.opts.netns_dir)
        .unwrap()
        .is_empty());
    let nat = run(&["iptables-save", "-t", "nat"]);
    assert!(!nat.contains("par-"), "{nat}");
});

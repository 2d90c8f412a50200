//! Network benchmark (run by `bench/network.sh` inside a private network namespace; refuses to
//! run in the host's):
//!
//! 1. Extra latency of creating a sandbox with a bridge network over one with none (namespace
//!    only): median of N create calls each, plus destroy for information; and the part of a
//!    bridge create that stays on a container's start path when the daemon overlaps CNI ADD
//!    with container creation (`prepare_sandbox`).
//! 2. TCP throughput sandbox→sandbox over the bridge vs. over loopback inside one sandbox, in
//!    the same run, as a ratio. Sender and receiver are threads that entered the namespaces with
//!    setns (only those threads move).
//!
//! Usage: netbench [--iterations N] [--megabytes M]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use zlayer_network::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("ZLAYER_NETBENCH_INSIDE").is_none() {
        return Err(
            "run me through bench/network.sh: it creates the private namespace first".into(),
        );
    }
    let mut iterations = 30usize;
    let mut megabytes = 512usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" => iterations = args.next().ok_or("--iterations N")?.parse()?,
            "--megabytes" => megabytes = args.next().ok_or("--megabytes M")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let dir = tempfile::tempdir()?;
    let opts = NetworkOptions::new(dir.path().join("cni"), dir.path().join("state"));
    let mgr = NetworkManager::open(opts)?;
    mgr.ensure_default()?;

    // Warm-up: the first bridge ADD creates the bridge and the iptables chains.
    let bridge = |id: String| SandboxRequest::new(id, NetworkMode::Bridge(DEFAULT_NETWORK.into()));
    mgr.create_sandbox(&bridge("warmup".into()))?;
    mgr.destroy_sandbox("warmup")?;

    let (none_create, none_destroy) = time_sandboxes(&mgr, iterations, |i| {
        SandboxRequest::new(format!("none-{i}"), NetworkMode::None)
    })?;
    let (br_create, br_destroy) = time_sandboxes(&mgr, iterations, |i| bridge(format!("br-{i}")))?;
    println!("sandbox create, median of {iterations}:");
    println!(
        "  none   {:>8.2} ms   (destroy {:>6.2} ms)",
        ms(none_create),
        ms(none_destroy)
    );
    println!(
        "  bridge {:>8.2} ms   (destroy {:>6.2} ms)",
        ms(br_create),
        ms(br_destroy)
    );
    let extra = ms(br_create) - ms(none_create);
    println!("  extra latency of a bridge create over none: {extra:.2} ms");
    let mut prepare = Vec::new();
    for i in 0..iterations {
        let id = format!("pr-{i}");
        let t = Instant::now();
        let p = mgr.prepare_sandbox(&bridge(id.clone()))?;
        prepare.push(t.elapsed());
        mgr.attach_sandbox(p)?;
        mgr.destroy_sandbox(&id)?;
    }
    println!(
        "  bridge prepare (namespace only; the daemon runs the ADD during container creation): {:.2} ms",
        ms(median(prepare))
    );

    // What the bridge path is made of on this machine: the chain execs bridge, which execs
    // host-local (Go binaries; portmap only runs for sandboxes with published ports).
    let exec_cost = median_of(10, || {
        std::process::Command::new("/usr/lib/cni/bridge")
            .env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::null())
            .output()
            .map(|_| ())
    })?;
    let iptables_cost = median_of(10, || {
        std::process::Command::new("iptables")
            .args(["-w", "-n", "-L", ISOLATION_CHAIN])
            .output()
            .map(|_| ())
    })?;
    println!(
        "  for reference here: one CNI plugin exec {:.2} ms, one iptables command {:.2} ms",
        ms(exec_cost),
        ms(iptables_cost)
    );

    let a = mgr.create_sandbox(&bridge("tp-a".into()))?;
    let b = mgr.create_sandbox(&bridge("tp-b".into()))?;
    let (ns_a, ns_b) = (
        a.netns_path.clone().ok_or("no netns")?,
        b.netns_path.clone().ok_or("no netns")?,
    );
    let ip_b = b.ipv4().ok_or("no IPv4 address")?;
    let bytes = megabytes * 1024 * 1024;
    let over_bridge = throughput(&ns_a, &ns_b, ip_b, bytes)?;
    let over_loopback = throughput(&ns_a, &ns_a, Ipv4Addr::LOCALHOST, bytes)?;
    println!("TCP throughput, {megabytes} MiB:");
    println!(
        "  sandbox -> sandbox over bridge  {:>9.1} MiB/s",
        over_bridge
    );
    println!(
        "  loopback inside one sandbox     {:>9.1} MiB/s",
        over_loopback
    );
    println!(
        "  ratio bridge/loopback           {:>9.3}",
        over_bridge / over_loopback
    );
    mgr.destroy_sandbox("tp-a")?;
    mgr.destroy_sandbox("tp-b")?;
    // The namespace directory is a (shared) mount point of its own; unmount it so the temporary
    // directory can be removed.
    nix::mount::umount2(&mgr.options().netns_dir, nix::mount::MntFlags::MNT_DETACH)?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_of(n: usize, mut f: impl FnMut() -> std::io::Result<()>) -> std::io::Result<Duration> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed());
    }
    Ok(median(v))
}

fn time_sandboxes(
    mgr: &NetworkManager,
    n: usize,
    req: impl Fn(usize) -> SandboxRequest,
) -> Result<(Duration, Duration), NetworkError> {
    let (mut create, mut destroy) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = req(i);
        let t = Instant::now();
        mgr.create_sandbox(&r)?;
        create.push(t.elapsed());
        let t = Instant::now();
        mgr.destroy_sandbox(&r.id)?;
        destroy.push(t.elapsed());
    }
    Ok((median(create), median(destroy)))
}

fn enter(netns: &Path) -> std::io::Result<()> {
    let f = File::open(netns)?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// MiB/s of `bytes` sent from a thread in `from` to a receiver thread in `to` at `ip`.
fn throughput(
    from: &Path,
    to: &Path,
    ip: Ipv4Addr,
    bytes: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let to = to.to_path_buf();
    let receiver = std::thread::spawn(move || -> std::io::Result<Duration> {
        enter(&to)?;
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let _ = tx.send(listener.local_addr()?.port());
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        let start = Instant::now();
        while got < bytes {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(start.elapsed())
    });
    let port = rx.recv()?;
    let from = from.to_path_buf();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        enter(&from)?;
        let mut conn = TcpStream::connect(SocketAddr::from((ip, port)))?;
        let chunk = vec![0x5au8; 256 * 1024];
        let mut sent = 0usize;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            conn.write_all(&chunk[..n])?;
            sent += n;
        }
        Ok(())
    });
    sender.join().map_err(|_| "sender panicked")??;
    let elapsed = receiver.join().map_err(|_| "receiver panicked")??;
    Ok(bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
}

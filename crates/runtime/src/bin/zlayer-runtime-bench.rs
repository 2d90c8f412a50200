//! Benchmarks of the runtime library path (the daemon and CLI are wired separately):
//!
//! * `run N`: start-to-exit latency of `true` — overlay mount + bundle + shim + wait +
//!   unmount/delete — against `runc run` of the same config.json on an overlay mounted
//!   the same way, N runs each, interleaved; prints medians and their ratio.
//! * `density N`: start N `sleep` containers one after another; prints the wall time and
//!   the PSS of each shim (from /proc/PID/smaps_rollup).
//!
//! This binary is also the shim (`zlayer-runtime-bench shim ...`), so what is measured is
//! exactly the library code the daemon calls, in a release build of this binary.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use zlayer_runtime::oci_spec::image::ImageConfiguration;
use zlayer_runtime::rootfs;
use zlayer_runtime::{generate, write_bundle, ContainerSpec, RunOptions};
use zlayer_runtime::{launch, LaunchRequest, ShimClient};

const CGROUP_PARENT: &str = "/zlayer-bench";

fn busybox_layer(base: &Path) -> PathBuf {
    let l = base.join("layer");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        fs::create_dir_all(l.join(d)).expect("create layer dir");
    }
    fs::copy("/bin/busybox", l.join("bin/busybox"))
        .expect("copy /bin/busybox (apt install busybox-static)");
    for a in ["sh", "true", "sleep"] {
        let _ = symlink("busybox", l.join("bin").join(a));
    }
    fs::write(l.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(l.join("etc/group"), "root:x:0:\n").expect("group");
    l
}

fn image() -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .expect("static image config")
}

fn opts(cmd: &[&str]) -> RunOptions {
    RunOptions {
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        cgroup_parent: Some(CGROUP_PARENT.into()),
        ..Default::default()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn shim_cmd() -> Vec<OsString> {
    vec![
        std::env::current_exe().expect("current_exe").into(),
        "shim".into(),
    ]
}

fn run_ours(base: &Path, layer: &Path, i: usize) -> Duration {
    let id = format!("zr{i}");
    let dir = base.join("c").join(&id);
    let t0 = Instant::now();
    let l = launch(&LaunchRequest {
        id: &id,
        container_dir: &dir,
        state_dir: &base.join("s"),
        layers: &[layer.to_path_buf()],
        image: &image(),
        options: &opts(&["true"]),
        shim_cmd: &shim_cmd(),
        log_max_size: 10 << 20,
        log_max_files: 3,
        start_gate: None,
    })
    .expect("launch");
    let rec = l.handle.client().wait().expect("wait");
    assert_eq!(rec.exit_code, 0);
    rootfs::remove(&dir).expect("remove");
    t0.elapsed()
}

fn run_runc(base: &Path, layer: &Path, i: usize) -> Duration {
    let id = format!("rc{i}");
    let dir = base.join("c").join(&id);
    let t0 = Instant::now();
    fs::create_dir_all(&dir).expect("dir");
    let fs_ = rootfs::mount_overlay(&dir, &[layer.to_path_buf()], false).expect("mount");
    let b = generate(&ContainerSpec {
        id: &id,
        container_dir: &dir,
        rootfs: &fs_.target,
        image: &image(),
        options: &opts(&["true"]),
    })
    .expect("generate");
    write_bundle(&dir, &fs_.target, &b).expect("write");
    let st = Command::new("runc")
        .args(["--root"])
        .arg(base.join("runc"))
        .args(["run", "--bundle"])
        .arg(&dir)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("runc (apt install runc)");
    assert!(st.success(), "runc run failed: {st}");
    rootfs::remove(&dir).expect("remove");
    t0.elapsed()
}

fn bench_run(base: &Path, n: usize) {
    let layer = busybox_layer(base);
    // warm-up (page cache, cgroup parents)
    run_ours(base, &layer, 10_000);
    run_runc(base, &layer, 10_000);
    let (mut ours, mut runc) = (Vec::new(), Vec::new());
    for i in 0..n {
        ours.push(run_ours(base, &layer, i));
        runc.push(run_runc(base, &layer, i));
    }
    let (mo, mr) = (median(&mut ours), median(&mut runc));
    println!("run `true`, N={n} each, interleaved:");
    println!(
        "  zlayer-runtime (mount+bundle+shim+wait+remove): median {:.1} ms",
        ms(mo)
    );
    println!(
        "  runc run (mount+bundle+runc run+remove):        median {:.1} ms",
        ms(mr)
    );
    println!(
        "  ratio zlayer/runc: {:.2}",
        mo.as_secs_f64() / mr.as_secs_f64()
    );
}

fn pss_kb(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn bench_density(base: &Path, n: usize) {
    let layer = busybox_layer(base);
    let mut started = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        let id = format!("zd{i}");
        let dir = base.join("c").join(&id);
        let l = launch(&LaunchRequest {
            id: &id,
            container_dir: &dir,
            state_dir: &base.join("s"),
            layers: std::slice::from_ref(&layer),
            image: &image(),
            options: &opts(&["sleep", "1000"]),
            shim_cmd: &shim_cmd(),
            log_max_size: 10 << 20,
            log_max_files: 3,
            start_gate: None,
        })
        .expect("launch");
        started.push((dir, l.handle));
    }
    let wall = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let pss: Vec<u64> = started
        .iter()
        .filter_map(|(_, h)| pss_kb(h.shim_pid))
        .collect();
    let total: u64 = pss.iter().sum();
    println!(
        "density: {n} `sleep` containers started in {:.2} s ({:.1} ms each)",
        wall.as_secs_f64(),
        ms(wall) / n as f64
    );
    println!(
        "  shim PSS: mean {:.0} KiB, max {} KiB, total {:.1} MiB over {} shims",
        total as f64 / pss.len().max(1) as f64,
        pss.iter().max().copied().unwrap_or(0),
        total as f64 / 1024.0,
        pss.len()
    );
    if let Some(secs) = std::env::var("ZLB_HOLD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        // keep the containers for inspection (e.g. /proc/PID/smaps of a shim)
        println!(
            "  holding {secs} s; shim pids: {:?}",
            started.iter().map(|(_, h)| h.shim_pid).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_secs(secs));
    }
    for (dir, h) in &started {
        let c: ShimClient = h.client();
        let _ = c.stop(Duration::from_millis(100), libc::SIGKILL);
        let _ = rootfs::remove(dir);
    }
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "shim") {
        std::process::exit(zlayer_runtime::shim::main(argv[2..].to_vec()));
    }
    let mode = argv
        .get(1)
        .and_then(|a| a.to_str())
        .unwrap_or("run")
        .to_string();
    let n: usize = argv
        .get(2)
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or(if mode == "density" { 50 } else { 30 });
    let base = PathBuf::from(format!("/tmp/zlb-{}", std::process::id()));
    fs::create_dir_all(&base).expect("base dir");
    match mode.as_str() {
        "run" => bench_run(&base, n),
        "density" => bench_density(&base, n),
        other => {
            eprintln!("usage: zlayer-runtime-bench run|density [N] (got {other:?})");
            std::process::exit(2);
        }
    }
    let _ = fs::remove_dir_all(&base);
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let _ = fs::remove_dir(e.path().join(CGROUP_PARENT.trim_start_matches('/')));
        }
    }
}

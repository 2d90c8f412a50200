//! Issue 11 (items 1-4, 9, 11) and issue 18 (item 7): what a hostile or careless user must not
//! get through the CLI and the API, with real daemons and containers.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{daemon_with_busybox, run, run_within, TestDaemon};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `args` as uid/gid 65534 without supplementary groups; true when it succeeded.
fn as_nobody(args: &[&str]) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            // Through a shell: setpriv's own execve still holds root's capabilities (so it
            // would traverse anything); the shell's execve has none, as a real user's.
            "/bin/sh",
            "-c",
            "exec \"$0\" \"$@\"",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running setpriv (util-linux)")
        .success()
}

fn daemon_rss_kib(d: &TestDaemon) -> u64 {
    let pid = d.child.as_ref().expect("daemon running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Issue 11 item 1: an earlier install's loose modes are tightened at start, agent.db and
/// its WAL are 0600, and a local user reads no container's environment or snapshot.
#[test]
fn agent_data_is_private_to_root() {
    let Some((mut d, image)) = daemon_with_busybox() else {
        return;
    };
    // Loosen everything as an older build (or an operator) left it, and make the test's
    // temp dir traversable so that only the agent's own modes protect its data.
    d.stop();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in [d.root(), d.state(), d.root().join("containers")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        d.root().join("agent.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    d.spawn();
    assert_eq!(mode(&d.root()), 0o700);
    assert_eq!(mode(&d.state()), 0o700);
    assert_eq!(mode(&d.root().join("containers")), 0o700);
    let id = d
        .ok(&[
            "run",
            "-d",
            "-e",
            "DB_PASSWORD=hunter2",
            &image,
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    for f in ["agent.db", "agent.db-wal", "agent.db-shm"] {
        let p = d.root().join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    let cdir = d.root().join("containers").join(&id);
    assert_eq!(mode(&cdir), 0o700);
    assert_eq!(mode(&cdir.join("config.json")), 0o600);

    // Even with the root's mode put back to 0755 (an operator's mistake), the files that hold
    // the secret stay closed; with the agent's own modes nothing under it is reachable.
    let snapshot_busybox = walk_find(&d.root().join("snapshots"), "busybox")
        .expect("the busybox binary in a snapshot");
    let db = d.root().join("agent.db");
    let config = cdir.join("config.json");
    for target in [&db, &config, &snapshot_busybox] {
        assert!(
            !as_nobody(&["cat", &target.display().to_string()]),
            "an unprivileged user read {}",
            target.display()
        );
    }
    assert!(
        !as_nobody(&[&snapshot_busybox.display().to_string(), "true"]),
        "an unprivileged user executed {} (modes of its directories: {:?})",
        snapshot_busybox.display(),
        snapshot_busybox
            .ancestors()
            .map(|a| format!("{} {:o}", a.display(), mode(a)))
            .collect::<Vec<_>>()
    );
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("hunter2"),
        "the secret is where the test expects it"
    );
    std::fs::set_permissions(d.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for target in [&db, &config] {
        assert!(
            !as_nobody(&["cat", &target.display().to_string()]),
            "an unprivileged user read {} through a 0755 root",
            target.display()
        );
    }
    std::fs::set_permissions(d.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn walk_find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let ft = e.file_type().ok()?;
        if ft.is_file() && e.file_name() == name {
            return Some(e.path());
        }
        if ft.is_dir() {
            if let Some(p) = walk_find(&e.path(), name) {
                return Some(p);
            }
        }
    }
    None
}

/// Issue 11 item 2: ids outside 0..2^31-1 are errors (2^32-1 ran the process as root).
#[test]
fn out_of_range_user_ids_are_refused() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    for user in [
        "4294967295",
        "-1",
        "0:4294967295",
        "1000:-1",
        "2147483648",
        "-5:0",
    ] {
        let (code, out, err) = run(&d, &["run", "--rm", "-u", user, &image, "id", "-u"]);
        assert_eq!(code, 125, "-u {user}: {out}{err}");
        assert!(
            err.contains("uids and gids must be in range 0-2147483647"),
            "-u {user}: {err}"
        );
    }
    let (code, out, _) = run(&d, &["run", "--rm", "-u", "2147483647", &image, "id", "-u"]);
    assert_eq!((code, out.trim()), (0, "2147483647"));
    let id = d
        .ok(&["run", "-d", &image, "sleep", "1000"])
        .trim()
        .to_string();
    let (code, _, err) = run(&d, &["exec", "-u", "4294967295", &id, "id", "-u"]);
    assert_ne!(code, 0);
    assert!(err.contains("0-2147483647"), "{err}");
}

/// An image whose /etc/passwd and /etc/group are what the test asks for.
fn load_hostile_image(d: &TestDaemon) -> Vec<(String, &'static str)> {
    use zlayer_testkit::fixtures::{Compression, LayoutWriter, Meta};
    let dir = d.dir.path().join("hostile-layout");
    let mut w = LayoutWriter::create(&dir).unwrap();
    let mut images = Vec::new();
    for (tag, what) in [
        ("fifo", "a FIFO"),
        ("chardev", "a character device"),
        ("groupfifo", "a FIFO"),
    ] {
        let mut l = w.layer(Compression::Gzip).unwrap();
        l.dir("etc", Meta::mode(0o755)).unwrap();
        match tag {
            "fifo" => l.fifo("etc/passwd", Meta::mode(0o644)).unwrap(),
            "chardev" => l
                .char_device("etc/passwd", 1, 5, Meta::mode(0o666))
                .unwrap(),
            _ => {
                l.file(
                    "etc/passwd",
                    Meta::mode(0o644),
                    b"root:x:0:0::/root:/bin/sh\n",
                )
                .unwrap();
                l.fifo("etc/group", Meta::mode(0o644)).unwrap();
            }
        }
        let layer = w.commit_layer(l).unwrap();
        let (m, _) = w
            .put_image(
                "amd64",
                serde_json::json!({"Cmd": ["/bin/sh"]}),
                &[layer],
                &["hostile /etc"],
                None,
            )
            .unwrap();
        let name = format!("zlayer.local/test/hostile:{tag}");
        w.tag(&name, &m, Some("amd64"));
        images.push((name, what));
    }
    w.finish().unwrap();
    d.ok(&["load", "-i", &dir.display().to_string()]);
    images
}

/// Issue 11 item 3: a FIFO or /dev/zero as the image's /etc/passwd (or /etc/group) is a quick
/// clear error; the daemon neither hangs nor grows, and nothing is left that `rm -f` cannot free.
#[test]
fn image_etc_files_of_the_wrong_type_fail_fast() {
    if !zlayer_testkit::prereq::require_root() {
        return;
    }
    let d = TestDaemon::start();
    let images = load_hostile_image(&d);
    let rss_before = daemon_rss_kib(&d);
    for (image, what) in &images {
        for user in [None, Some("app")] {
            let mut args = vec!["run", "--rm", "--network", "none"];
            if let Some(u) = user {
                args.extend(["-u", u]);
            }
            args.push(image);
            let started = Instant::now();
            let (code, out, err, _) = run_within(&d, &args, Duration::from_secs(60));
            assert_ne!(code, 0, "{image}: {out}");
            assert!(
                err.contains("not a regular file but") && err.contains(what),
                "{image} -u {user:?}: {err}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{image}: took {:?}",
                started.elapsed()
            );
        }
    }
    let rss_after = daemon_rss_kib(&d);
    assert!(
        rss_after < rss_before + 100 * 1024,
        "daemon grew from {rss_before} to {rss_after} KiB"
    );
    for id in d.ok(&["ps", "-aq"]).split_whitespace() {
        d.ok(&["rm", "-f", id]);
    }
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    d.ok(&["version"]);
}

/// Issue 11 item 4 and issue 18 item 7: values written into generated files are refused
/// when they carry control characters; hostnames follow the kernel's rules.
#[test]
fn control_characters_and_bad_hostnames_are_refused() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let long = "a".repeat(100);
    for (flag, value, needle) in [
        (
            "--add-host",
            "evil\n6.6.6.6 bank:10.0.0.1",
            "control character",
        ),
        ("--hostname", "web\n6.6.6.6 bank", "control character"),
        (
            "--hostname",
            long.as_str(),
            "100 characters, the limit is 64",
        ),
        ("--hostname", "bad host", "is not allowed"),
        ("-e", "=", "the name before '=' is empty"),
        ("-e", "A\nB=1", "control character"),
    ] {
        let (code, out, err) = run(&d, &["run", "--rm", flag, value, &image, "true"]);
        assert_eq!(code, 125, "{flag} {value:?}: {out}{err}");
        assert!(
            err.contains(flag.trim_start_matches('-')) || err.contains("environment"),
            "{flag}: {err}"
        );
        assert!(err.contains(needle), "{flag} {value:?}: {err}");
    }
    // A valid 64-character hostname works.
    let ok = "h".repeat(64);
    let (code, out, err) = run(&d, &["run", "--rm", "--hostname", &ok, &image, "hostname"]);
    assert_eq!((code, out.trim()), (0, ok.as_str()), "{err}");
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
}

/// Issue 11 item 9: a socket, a FIFO and /dev/null are bind-mounted onto files.
#[test]
fn bind_mounts_of_sockets_fifos_and_devices() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let host = d.dir.path().join("binds");
    std::fs::create_dir_all(&host).unwrap();
    // A datagram socket on /dev/log: busybox `logger` talks to it from inside the container.
    let sock = host.join("log.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let fifo = host.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let v = |src: &Path, dst: &str| format!("{}:{dst}", src.display());
    let (code, out, err) = run(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &v(&sock, "/dev/log"),
            "-v",
            &v(&fifo, "/run/fifo"),
            "-v",
            "/dev/null:/opt/null",
            &image,
            "sh",
            "-c",
            "test -S /dev/log && test -p /run/fifo && test -c /opt/null && \
             logger -t zl hello-from-container && echo through-fifo > /run/fifo && \
             echo gone > /opt/null && echo ok",
        ],
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}\n{}", d.log());
    let mut buf = [0u8; 1024];
    let n = listener.recv(&mut buf).expect("a syslog datagram");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.contains("hello-from-container"), "{msg}");
    assert_eq!(reader.join().unwrap(), "through-fifo\n");
    let _ = std::fs::File::create(host.join("unused")).map(|mut f| f.write_all(b""));
}

/// Issue 11 item 11 and issue 18 item 7: resource, signal and mount options are checked up
/// front with messages in the user's terms.
#[test]
fn run_options_are_validated_with_clear_errors() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cpus", "nan"], "range of CPUs is from 0.01 to"),
        (vec!["--cpus", "inf"], "range of CPUs is from 0.01 to"),
        (vec!["--cpus", "1e-7"], "range of CPUs is from 0.01 to"),
        (vec!["--cpus", "1000"], "range of CPUs is from 0.01 to"),
        (vec!["--memory", "10e30"], "invalid --memory \"10e30\""),
        (
            vec!["--stop-signal", "NOPE"],
            "invalid --stop-signal \"NOPE\"",
        ),
        (
            vec!["--tmpfs", "/data", "--tmpfs", "/data/"],
            "duplicate mount point: /data",
        ),
        (
            vec!["-v", "/tmp:/proc"],
            "/proc cannot be a mount destination",
        ),
        (
            vec!["-v", "/tmp:/x/../proc/sys"],
            "/proc/sys cannot be a mount destination",
        ),
        (vec!["-v", "/tmp:/"], "/ cannot be a mount destination"),
        (vec!["--pids-limit", "1"], "init could not start"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend(&flags);
        args.extend([image.as_str(), "true"]);
        let (code, out, err) = run(&d, &args);
        assert_ne!(code, 0, "{flags:?}: {out}");
        assert!(err.contains(needle), "{flags:?}: {err}");
        assert!(!err.contains("-1 bytes"), "{flags:?}: {err}");
    }
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    // The smallest pids limit that is accepted does start a container.
    let (code, _, err) = run(&d, &["run", "--rm", "--pids-limit", "2", &image, "true"]);
    assert_eq!(code, 0, "{err}");
}

/// Issue 11 item 11: exec errors talk about the exec.
#[test]
fn exec_errors_are_clear() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let id = d
        .ok(&["run", "-d", &image, "sleep", "1000"])
        .trim()
        .to_string();
    let (code, _, err) = run(&d, &["exec", "-w", "/nonexistent", &id, "pwd"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/nonexistent") && err.contains("no such directory"),
        "{err}"
    );
    let (code, _, err) = run(&d, &["exec", "-w", "/bin/busybox", &id, "pwd"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a directory"), "{err}");
    let (code, _, err) = run(&d, &["exec", "-e", "=", &id, "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("the name before '=' is empty"), "{err}");
    let (code, _, err) = run(&d, &["exec", &id, "nosuchcmd"]);
    assert_eq!(code, 127, "{err}");
    assert!(
        err.contains("exec") && !err.contains("starting container"),
        "{err}"
    );
    // The container is unharmed and exec still works.
    let (code, out, _) = run(&d, &["exec", "-w", "/tmp", &id, "pwd"]);
    assert_eq!((code, out.trim()), (0, "/tmp"));
}

/// Issue 11 item 11: a body over the API's limit is a 413 naming the limit (from the daemon
/// for any client, and from the CLI before it sends), and a dry run checks image digests.
#[test]
fn deploy_body_limit_and_dry_run_digest() {
    if !zlayer_testkit::prereq::require_root() {
        return;
    }
    let d = TestDaemon::start();
    // The CLI: a 13 MB spec file.
    let big = d.dir.path().join("big.yaml");
    let mut text =
        String::from("version: v1\ndeployment: big\nservices:\n  a:\n    image: busybox\n");
    text.push_str(&format!("# {}\n", "x".repeat(13 << 20)));
    std::fs::write(&big, text).unwrap();
    let (code, _, err) = run(&d, &["deploy", &big.display().to_string()]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("2097152 bytes"), "{err}");

    // Any client: the daemon answers 413 with the limit in its JSON error.
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let len = 13 << 20;
    write!(
        s,
        "POST /v1/deployments HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
    .unwrap();
    // A little more than the limit is sent: the server reads up to the limit, answers and
    // closes (body bytes it never read would make the kernel reset the connection under the
    // answer, so not all 13 MB are sent).
    s.write_all(&vec![b' '; (2 << 20) + 1024]).unwrap();
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&resp).contains("}") {
            break;
        }
    }
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("2097152 bytes"), "{resp}");

    let spec = d.dir.path().join("digest.yaml");
    std::fs::write(
        &spec,
        "version: v1\ndeployment: dg\nservices:\n  a:\n    image: busybox@sha256:zzz\n",
    )
    .unwrap();
    let (code, _, err) = run(&d, &["deploy", "--dry-run", &spec.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("digest.yaml:5") && err.contains("busybox@sha256:zzz"),
        "{err}"
    );

    // A CPU quota above the node's CPUs is refused at deploy, with its place in the file.
    std::fs::write(
        &spec,
        "version: v1\ndeployment: dg\nservices:\n  a:\n    image: busybox\n    resources: {cpu: 1000}\n",
    )
    .unwrap();
    let (code, _, err) = run(&d, &["deploy", "--dry-run", &spec.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("digest.yaml:6") && err.contains("range of CPUs is from 0.01 to"),
        "{err}"
    );
    std::fs::write(
        &spec,
        "version: v1\ndeployment: dg\nservices:\n  a:\n    image: busybox\n    storage: [{type: tmpfs, target: /proc}]\n",
    )
    .unwrap();
    let (code, _, err) = run(&d, &["deploy", "--dry-run", &spec.display().to_string()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("digest.yaml:6") && err.contains("/proc cannot be a mount destination"),
        "{err}"
    );
}

//! Unit tests of spec generation (pure logic: a temp dir stands in for the rootfs).

use std::fs;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::host::v2_swap_accounting;
use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("rootfs/etc");
        fs::create_dir_all(&etc).unwrap();
        fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33:www:/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(etc.join("group"), "root:x:0:\nwww:x:33:\nadm:x:4:web\n").unwrap();
        Fixture { dir }
    }

    fn gen(
        &self,
        image: serde_json::Value,
        opts: &RunOptions,
    ) -> Result<GeneratedBundle, BundleError> {
        let img: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": image,
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let rootfs = self.dir.path().join("rootfs");
        generate(&ContainerSpec {
            id: "0123456789abcdef0123",
            container_dir: self.dir.path(),
            rootfs: &rootfs,
            image: &img,
            options: opts,
        })
    }
}

fn args(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().args().clone().unwrap()
}

fn env(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().env().clone().unwrap()
}

/// The capability arithmetic with this process's bounding set, as a start computes it.
fn effective_caps(opts: &RunOptions) -> Result<Vec<String>, BundleError> {
    effective_caps_within(opts, own_bounding_set())
}

fn sv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cmd_args_replace_image_cmd_and_keep_entrypoint() {
    let f = Fixture::new();
    let img = serde_json::json!({"Entrypoint": ["/ep"], "Cmd": ["a", "b"]});
    let b = f.gen(img.clone(), &RunOptions::default()).unwrap();
    assert_eq!(args(&b.spec), sv(&["/ep", "a", "b"]));
    let o = RunOptions {
        cmd: sv(&["x"]),
        ..Default::default()
    };
    assert_eq!(
        args(&f.gen(img.clone(), &o).unwrap().spec),
        sv(&["/ep", "x"])
    );
}

#[test]
fn entrypoint_override_clears_image_cmd() {
    let f = Fixture::new();
    let img = serde_json::json!({"Entrypoint": ["/ep"], "Cmd": ["a"]});
    let o = RunOptions {
        entrypoint: Some(sv(&["/bin/sh"])),
        ..Default::default()
    };
    assert_eq!(
        args(&f.gen(img.clone(), &o).unwrap().spec),
        sv(&["/bin/sh"])
    );
    let o = RunOptions {
        entrypoint: Some(sv(&["/bin/sh"])),
        cmd: sv(&["-c", "true"]),
        ..Default::default()
    };
    assert_eq!(
        args(&f.gen(img.clone(), &o).unwrap().spec),
        sv(&["/bin/sh", "-c", "true"])
    );
    // --entrypoint "" and no command: nothing to run
    let o = RunOptions {
        entrypoint: Some(vec![]),
        ..Default::default()
    };
    assert!(matches!(f.gen(img, &o), Err(BundleError::NoCommand)));
}

#[test]
fn env_order_image_then_file_then_flags_with_default_path() {
    let f = Fixture::new();
    let img = serde_json::json!({"Env": ["A=image", "B=image"], "Cmd": ["sh"]});
    let o = RunOptions {
        env_file: sv(&["B=file", "C=file"]),
        env: sv(&["C=flag", "D=flag"]),
        ..Default::default()
    };
    let e = env(&f.gen(img, &o).unwrap().spec);
    assert_eq!(e[0], "HOSTNAME=0123456789ab");
    assert!(e.contains(&format!("PATH={DEFAULT_PATH}")));
    for want in ["A=image", "B=file", "C=flag", "D=flag", "HOME=/root"] {
        assert!(e.contains(&want.to_string()), "{want} in {e:?}");
    }
    assert!(!e.contains(&"B=image".to_string()));
    // the image's PATH is kept
    let img = serde_json::json!({"Env": ["PATH=/custom"], "Cmd": ["sh"]});
    let e = env(&f.gen(img, &RunOptions::default()).unwrap().spec);
    assert!(e.contains(&"PATH=/custom".to_string()));
    assert_eq!(e.iter().filter(|v| v.starts_with("PATH=")).count(), 1);
    let bad = RunOptions {
        env: sv(&["NOEQUALS"]),
        ..Default::default()
    };
    assert!(matches!(
        f.gen(serde_json::json!({"Cmd": ["sh"]}), &bad),
        Err(BundleError::InvalidEnv(_))
    ));
}

#[test]
fn user_from_image_or_flag_with_groups() {
    let f = Fixture::new();
    let img = serde_json::json!({"User": "web", "Cmd": ["sh"]});
    let b = f.gen(img.clone(), &RunOptions::default()).unwrap();
    let u = b.spec.process().as_ref().unwrap().user().clone();
    assert_eq!((u.uid(), u.gid()), (33, 33));
    assert_eq!(u.additional_gids().clone().unwrap(), vec![4]);
    assert!(env(&b.spec).contains(&"HOME=/var/www".to_string()));
    let o = RunOptions {
        user: Some("1234:5678".into()),
        ..Default::default()
    };
    let u = f
        .gen(img.clone(), &o)
        .unwrap()
        .spec
        .process()
        .as_ref()
        .unwrap()
        .user()
        .clone();
    assert_eq!((u.uid(), u.gid()), (1234, 5678));
    let o = RunOptions {
        user: Some("ghost".into()),
        ..Default::default()
    };
    let e = f.gen(img, &o).unwrap_err().to_string();
    assert!(e.contains("unable to find user ghost"), "{e}");
}

#[test]
fn workdir_default_image_flag_and_relative_rejected() {
    let f = Fixture::new();
    let cwd = |img, o: &RunOptions| {
        f.gen(img, o)
            .unwrap()
            .spec
            .process()
            .as_ref()
            .unwrap()
            .cwd()
            .display()
            .to_string()
    };
    assert_eq!(
        cwd(serde_json::json!({"Cmd": ["sh"]}), &RunOptions::default()),
        "/"
    );
    assert_eq!(
        cwd(
            serde_json::json!({"Cmd": ["sh"], "WorkingDir": "/app"}),
            &RunOptions::default()
        ),
        "/app"
    );
    let o = RunOptions {
        workdir: Some("/w".into()),
        ..Default::default()
    };
    assert_eq!(
        cwd(serde_json::json!({"Cmd": ["sh"], "WorkingDir": "/app"}), &o),
        "/w"
    );
    let o = RunOptions {
        workdir: Some("rel".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.gen(serde_json::json!({"Cmd": ["sh"]}), &o),
        Err(BundleError::RelativeWorkdir(_))
    ));
}

#[test]
fn write_bundle_creates_workdir_and_etc_files() {
    let f = Fixture::new();
    let o = RunOptions {
        workdir: Some("/a/b/c".into()),
        hostname: Some("h1".into()),
        dns: vec!["10.0.0.53".parse().unwrap()],
        ..Default::default()
    };
    let b = f.gen(serde_json::json!({"Cmd": ["sh"]}), &o).unwrap();
    let rootfs = f.dir.path().join("rootfs");
    write_bundle(f.dir.path(), &rootfs, &b).unwrap();
    assert!(rootfs.join("a/b/c").is_dir());
    assert_eq!(
        fs::read_to_string(f.dir.path().join("hostname")).unwrap(),
        "h1\n"
    );
    assert!(fs::read_to_string(f.dir.path().join("hosts"))
        .unwrap()
        .contains("127.0.0.1\tlocalhost"));
    assert!(fs::read_to_string(f.dir.path().join("resolv.conf"))
        .unwrap()
        .contains("nameserver 10.0.0.53"));
    let back = Spec::load(f.dir.path().join("config.json")).unwrap();
    assert_eq!(back, b.spec);
    let dests: Vec<String> = back
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    for d in [
        "/proc",
        "/dev",
        "/dev/shm",
        "/dev/pts",
        "/sys",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
    ] {
        assert!(dests.contains(&d.to_string()), "{d}");
    }
}

#[test]
fn workdir_symlink_cannot_escape_rootfs() {
    let f = Fixture::new();
    let rootfs = f.dir.path().join("rootfs");
    let outside = f.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, rootfs.join("evil")).unwrap();
    crate::safe_path::mkdir_all_in_root(&rootfs, Path::new("/evil/x"), 0o755).unwrap();
    assert!(
        !outside.join("x").exists(),
        "escaped through an absolute symlink"
    );
    assert!(rootfs
        .join(outside.strip_prefix("/").unwrap())
        .join("x")
        .is_dir());
}

#[test]
fn capabilities_default_drop_add_all_privileged() {
    let d = effective_caps(&RunOptions::default()).unwrap();
    assert_eq!(d.len(), DEFAULT_CAPS.len());
    let o = RunOptions {
        cap_drop: sv(&["all"]),
        cap_add: sv(&["net_admin", "CAP_CHOWN"]),
        ..Default::default()
    };
    assert_eq!(
        effective_caps(&o).unwrap(),
        sv(&["CAP_CHOWN", "CAP_NET_ADMIN"])
    );
    let o = RunOptions {
        cap_drop: sv(&["NET_RAW"]),
        ..Default::default()
    };
    assert!(!effective_caps(&o)
        .unwrap()
        .contains(&"CAP_NET_RAW".to_string()));
    let o = RunOptions {
        cap_add: sv(&["ALL"]),
        ..Default::default()
    };
    assert_eq!(
        effective_caps_within(&o, u64::MAX).unwrap().len(),
        ALL_CAPS.len()
    );
    // without CAP_SYS_RESOURCE (24) in our own bounding set, ALL cannot include it
    let got = effective_caps_within(&o, !(1 << 24)).unwrap();
    assert_eq!(got.len(), ALL_CAPS.len() - 1);
    assert!(!got.contains(&"CAP_SYS_RESOURCE".to_string()));
    let o = RunOptions {
        cap_add: sv(&["FLY"]),
        ..Default::default()
    };
    assert!(matches!(
        effective_caps(&o),
        Err(BundleError::UnknownCapability(_))
    ));
}

#[test]
fn security_masks_seccomp_and_privileged() {
    let f = Fixture::new();
    let b = f
        .gen(serde_json::json!({"Cmd": ["sh"]}), &RunOptions::default())
        .unwrap();
    let l = b.spec.linux().as_ref().unwrap();
    assert!(l
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    assert!(l
        .readonly_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/sys".to_string()));
    assert!(l.seccomp().is_some());
    assert_eq!(
        b.spec.process().as_ref().unwrap().no_new_privileges(),
        Some(true)
    );
    let p = f
        .gen(
            serde_json::json!({"Cmd": ["sh"]}),
            &RunOptions {
                privileged: true,
                ..Default::default()
            },
        )
        .unwrap();
    let l = p.spec.linux().as_ref().unwrap();
    assert!(l.seccomp().is_none() && l.masked_paths().is_none());
    let caps = p
        .spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    assert_eq!(
        caps.bounding().as_ref().unwrap().len() as u32,
        own_bounding_set().count_ones().min(ALL_CAPS.len() as u32)
    );
}

#[test]
fn resources_namespaces_and_cgroup_path() {
    let f = Fixture::new();
    let o = RunOptions {
        memory: Some(64 << 20),
        cpus: Some(1.5),
        cpu_shares: Some(512),
        pids_limit: Some(100),
        ulimits: vec![Ulimit::parse("nofile=1024:2048").unwrap()],
        network: NetworkMode::Host,
        ..Default::default()
    };
    let b = f
        .gen(
            serde_json::json!({"Cmd": ["sh"], "StopSignal": "SIGQUIT"}),
            &o,
        )
        .unwrap();
    assert_eq!(b.stop_signal, libc::SIGQUIT);
    let l = b.spec.linux().as_ref().unwrap();
    assert_eq!(
        l.cgroups_path().as_ref().unwrap().display().to_string(),
        "/zlayer-agent/0123456789abcdef0123"
    );
    let r = l.resources().as_ref().unwrap();
    assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.quota(), cpu.period(), cpu.shares()),
        (Some(150_000), Some(100_000), Some(512))
    );
    assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
    let ns: Vec<LinuxNamespaceType> = l
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(
        !ns.contains(&LinuxNamespaceType::Network),
        "host network: no netns"
    );
    let rl = b
        .spec
        .process()
        .as_ref()
        .unwrap()
        .rlimits()
        .clone()
        .unwrap();
    assert_eq!((rl[0].soft(), rl[0].hard()), (1024, 2048));
    // default network: a private namespace; a given netns is joined by path
    let b = f
        .gen(serde_json::json!({"Cmd": ["sh"]}), &RunOptions::default())
        .unwrap();
    assert!(b
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_none()));
    let o = RunOptions {
        network: NetworkMode::Netns("/run/netns/x".into()),
        ..Default::default()
    };
    let b = f.gen(serde_json::json!({"Cmd": ["sh"]}), &o).unwrap();
    assert!(b
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Network
            && n.path()
                .as_ref()
                .is_some_and(|p| p.display().to_string() == "/run/netns/x")));
    let bad = RunOptions {
        memory: Some(1024),
        ..Default::default()
    };
    assert!(matches!(
        f.gen(serde_json::json!({"Cmd": ["sh"]}), &bad),
        Err(BundleError::InvalidMemory(_))
    ));
}

#[test]
fn ulimit_and_signal_parsing() {
    assert_eq!(Ulimit::parse("nofile=10").unwrap().hard, 10);
    assert!(Ulimit::parse("nofile=20:10").is_err());
    assert!(Ulimit::parse("bogus=1").is_err());
    assert!(Ulimit::parse("nofile").is_err());
    assert_eq!(parse_signal("TERM"), Some(15));
    assert_eq!(parse_signal("sigkill"), Some(9));
    assert_eq!(parse_signal("10"), Some(10));
    assert_eq!(parse_signal("NOPE"), None);
}

#[test]
fn resolv_conf_drops_loopback_outside_host_network() {
    let host = "search example.com\nnameserver 127.0.0.53\nnameserver 192.0.2.1\noptions edns0\n";
    let r = resolv_conf(host, &[], &[], false);
    assert_eq!(
        r,
        "search example.com\nnameserver 192.0.2.1\noptions edns0\n"
    );
    let r = resolv_conf("nameserver 127.0.0.1\n", &[], &[], false);
    assert!(r.contains("nameserver 8.8.8.8"));
    let r = resolv_conf("nameserver 127.0.0.1\n", &[], &[], true);
    assert_eq!(r, "nameserver 127.0.0.1\n");
    let h = hosts_file(
        "c1",
        Some("10.0.0.2".parse().unwrap()),
        &[("db".into(), "10.0.0.3".parse().unwrap())],
        None,
    );
    assert!(h.contains("10.0.0.2\tc1\n") && h.ends_with("10.0.0.3\tdb\n"));
}

#[test]
fn v2_swap_accounting_is_read_off_a_cgroup_with_the_memory_controller() {
    // A fake v2 tree: the root has no memory files; a child with `memory.max` tells.
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("empty")).unwrap();
    fs::create_dir(root.path().join("svc")).unwrap();
    fs::write(root.path().join("svc/memory.max"), "max\n").unwrap();
    assert!(
        !v2_swap_accounting(root.path()),
        "no memory.swap.max: no swap accounting"
    );
    fs::write(root.path().join("svc/memory.swap.max"), "max\n").unwrap();
    assert!(v2_swap_accounting(root.path()));
    // No cgroup with the memory controller at all: no swap limit either.
    let bare = tempfile::tempdir().unwrap();
    assert!(!v2_swap_accounting(bare.path()));
}

/// An image's /etc/passwd that is a FIFO or a character device is refused at once (it
/// used to block the open forever, or read /dev/zero until the OOM killer came).
#[test]
fn passwd_of_the_wrong_type_is_a_quick_clear_error() {
    let f = Fixture::new();
    let passwd = f.dir.path().join("rootfs/etc/passwd");
    fs::remove_file(&passwd).unwrap();
    nix::unistd::mkfifo(&passwd, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let opts = RunOptions {
        user: Some("web".into()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let e = f
        .gen(serde_json::json!({"Cmd": ["sh"]}), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc/passwd") && e.contains("not a regular file but a FIFO"),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // A symlink to the host's /dev/zero resolves inside the rootfs (no such file there:
    // the lookup sees an empty passwd), a device node in the image itself is refused.
    fs::remove_file(&passwd).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &passwd).unwrap();
    let e = f
        .gen(serde_json::json!({"Cmd": ["sh"]}), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unable to find user web"), "{e}");
    // mknod needs root: the suite runs as root, and under CI this part is never left out.
    if nix::unistd::geteuid().is_root() || std::env::var_os("CI").is_some() {
        fs::remove_file(&passwd).unwrap();
        nix::sys::stat::mknod(
            &passwd,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        let e = f
            .gen(serde_json::json!({"Cmd": ["sh"]}), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a regular file but a character device"),
            "{e}"
        );
    }
}

#[test]
fn passwd_larger_than_the_cap_is_refused() {
    let f = Fixture::new();
    let passwd = f.dir.path().join("rootfs/etc/passwd");
    let file = fs::File::create(&passwd).unwrap();
    file.set_len(crate::safe_path::MAX_ROOTFS_FILE + 1).unwrap();
    let e = f
        .gen(serde_json::json!({"Cmd": ["sh"]}), &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than the 4194304 bytes allowed"), "{e}");
}

/// A bind mount of a socket, FIFO or device gets a file as mount point, not a directory
/// (libcontainer cannot mount a non-directory on a directory).
#[test]
fn bind_mount_points_of_non_directories_are_files() {
    let f = Fixture::new();
    let host = f.dir.path().join("host");
    fs::create_dir_all(&host).unwrap();
    let sock = host.join("x.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let fifo = host.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let bind = |src: &Path, target: &str| VolumeMount {
        source: VolumeSource::Bind(src.to_path_buf()),
        target: target.into(),
        read_only: false,
    };
    let opts = RunOptions {
        mounts: vec![
            bind(&sock, "/run/x.sock"),
            bind(&fifo, "/fifo"),
            bind(Path::new("/dev/null"), "/opt/null"),
            bind(&host, "/hostdir"),
        ],
        ..Default::default()
    };
    let b = f.gen(serde_json::json!({"Cmd": ["sh"]}), &opts).unwrap();
    let rootfs = f.dir.path().join("rootfs");
    write_bundle(f.dir.path(), &rootfs, &b).unwrap();
    for file in ["run/x.sock", "fifo", "opt/null"] {
        assert!(rootfs.join(file).is_file(), "{file} is not a file");
    }
    assert!(rootfs.join("hostdir").is_dir());
}

#[test]
fn options_that_land_in_files_or_confuse_the_runtime_are_refused() {
    let f = Fixture::new();
    let gen = |opts: RunOptions| {
        f.gen(serde_json::json!({"Cmd": ["sh"]}), &opts)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = gen(RunOptions {
        hostname: Some("a\n1.2.3.4 evil".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.contains("--hostname") && e.contains("control character"),
        "{e}"
    );
    let e = gen(RunOptions {
        extra_hosts: vec![("db\n6.6.6.6 bank".into(), "10.0.0.1".parse().unwrap())],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("--add-host"), "{e}");
    let e = gen(RunOptions {
        user: Some("4294967295".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("0-2147483647"), "{e}");
    let tmpfs = |t: &str| VolumeMount {
        source: VolumeSource::Tmpfs { size: None },
        target: t.into(),
        read_only: false,
    };
    let e = gen(RunOptions {
        mounts: vec![tmpfs("/data"), tmpfs("/data/")],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("duplicate mount point: /data"), "{e}");
    let e = gen(RunOptions {
        mounts: vec![tmpfs("/proc")],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("/proc cannot be a mount destination"), "{e}");
}

//! Unit tests of [`generate_with`] on host facts built by hand: no root, no temp files, the
//! same answer on every machine (cgroup v1 or v2, any /dev, any /etc/resolv.conf).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde_json::Value;

use super::*;
use crate::cgroups::Controllers;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33:www:/var/www:/bin/false\n";
const GROUP: &str = "root:x:0:\nwww:x:33:\nadm:x:4:web\n";

fn image(config: Value) -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

/// Facts of a cgroup v2 host whose image knows root and `web`.
fn facts() -> HostFacts {
    HostFacts {
        image_users: Ok(ImageUsers {
            passwd: PASSWD.into(),
            group: GROUP.into(),
        }),
        ..HostFacts::default()
    }
}

fn gen(opts: &RunOptions, facts: HostFacts) -> Result<GeneratedBundle, BundleError> {
    gen_image(serde_json::json!({"Cmd": ["sh"]}), opts, facts)
}

fn gen_image(
    config: Value,
    opts: &RunOptions,
    facts: HostFacts,
) -> Result<GeneratedBundle, BundleError> {
    let img = image(config);
    generate_with(
        &ContainerSpec {
            id: "0123456789abcdef0123",
            container_dir: Path::new("/var/lib/zl/containers/c1"),
            rootfs: Path::new("/nonexistent/rootfs"),
            image: &img,
            options: opts,
        },
        facts,
    )
}

/// The spec as JSON, for looking at fields the way config.json has them.
fn json(b: &GeneratedBundle) -> Value {
    serde_json::to_value(&b.spec).unwrap()
}

fn mount_destinations(b: &GeneratedBundle) -> Vec<String> {
    json(b)["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect()
}

fn namespace_types(b: &GeneratedBundle) -> Vec<String> {
    json(b)["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn same_facts_give_the_same_bundle() {
    let opts = RunOptions {
        memory: Some(64 << 20),
        ..Default::default()
    };
    let a = gen(&opts, facts()).unwrap();
    let b = gen(&opts, facts()).unwrap();
    // Compared as specs: capabilities are sets, serialised in no fixed order.
    assert_eq!(a.spec, b.spec);
    assert_eq!((a.hosts, a.resolv_conf), (b.hosts, b.resolv_conf));
}

#[test]
fn cgroup_view_only_on_a_v2_host() {
    let opts = RunOptions::default();
    let v2 = gen(&opts, facts()).unwrap();
    assert!(mount_destinations(&v2).contains(&"/sys/fs/cgroup".to_string()));
    assert!(namespace_types(&v2).contains(&"cgroup".to_string()));
    let v1 = gen(
        &opts,
        HostFacts {
            cgroup_v2: false,
            ..facts()
        },
    )
    .unwrap();
    assert!(!mount_destinations(&v1).contains(&"/sys/fs/cgroup".to_string()));
    assert!(!namespace_types(&v1).contains(&"cgroup".to_string()));
}

#[test]
fn privileged_gets_the_host_devices_from_the_facts_and_no_seccomp() {
    let dev = serde_json::json!({"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232,
        "fileMode": 0o660, "uid": 0, "gid": 0});
    let f = HostFacts {
        devices: vec![dev.clone()],
        ..facts()
    };
    let opts = RunOptions {
        privileged: true,
        ..Default::default()
    };
    let linux = json(&gen(&opts, f).unwrap())["linux"].clone();
    assert_eq!(linux["devices"][0]["path"], "/dev/kvm");
    assert!(linux.get("seccomp").is_none());
    assert!(linux.get("maskedPaths").is_none());

    let f = HostFacts {
        devices: vec![dev],
        ..facts()
    };
    let linux = json(&gen(&RunOptions::default(), f).unwrap())["linux"].clone();
    assert!(
        linux.get("devices").is_none(),
        "devices only when privileged"
    );
    assert!(linux["seccomp"].is_object());
    assert!(linux["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&Value::from("/proc/kcore")));
}

#[test]
fn privileged_capabilities_are_bounded_by_the_facts() {
    let opts = RunOptions {
        privileged: true,
        ..Default::default()
    };
    // Bits 0..=2: CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH.
    let f = HostFacts {
        bounding_set: 0b111,
        ..facts()
    };
    let caps = json(&gen(&opts, f).unwrap())["process"]["capabilities"]["bounding"].clone();
    let mut caps: Vec<&str> = caps
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    caps.sort();
    assert_eq!(
        caps,
        ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"]
    );
}

#[test]
fn host_network_takes_hostname_and_hosts_from_the_facts() {
    let host_hosts = "127.0.0.1 localhost\n10.1.2.3 buildhost\n";
    let f = HostFacts {
        hostname: "buildhost".into(),
        etc_hosts: Some(host_hosts.into()),
        resolv_conf: "nameserver 127.0.0.53\n".into(),
        ..facts()
    };
    let opts = RunOptions {
        network: NetworkMode::Host,
        ..Default::default()
    };
    let b = gen(&opts, f).unwrap();
    assert_eq!(b.hostname, "buildhost");
    assert!(b.hosts.starts_with(host_hosts), "{}", b.hosts);
    // The host's loopback resolver is reachable from its own network namespace.
    assert!(b.resolv_conf.contains("127.0.0.53"), "{}", b.resolv_conf);
    assert!(!namespace_types(&b).contains(&"network".to_string()));

    // In its own namespace: the id's prefix, loopback hosts, no loopback resolver.
    let f = HostFacts {
        hostname: "buildhost".into(),
        etc_hosts: Some(host_hosts.into()),
        resolv_conf: "nameserver 127.0.0.53\nnameserver 192.0.2.53\n".into(),
        ..facts()
    };
    let b = gen(&RunOptions::default(), f).unwrap();
    assert_eq!(b.hostname, "0123456789ab");
    assert!(!b.hosts.contains("buildhost"), "{}", b.hosts);
    assert!(!b.resolv_conf.contains("127.0.0.53"), "{}", b.resolv_conf);
    assert!(b.resolv_conf.contains("192.0.2.53"), "{}", b.resolv_conf);
}

#[test]
fn added_hosts_and_own_address_follow_the_base_hosts_file() {
    let ip: IpAddr = "10.88.0.5".parse().unwrap();
    let opts = RunOptions {
        ip_address: Some(ip),
        extra_hosts: vec![("db".into(), "10.88.0.9".parse().unwrap())],
        ..Default::default()
    };
    let b = gen(&opts, facts()).unwrap();
    assert!(b.hosts.contains("10.88.0.5\t0123456789ab\n"), "{}", b.hosts);
    assert!(b.hosts.ends_with("10.88.0.9\tdb\n"), "{}", b.hosts);
}

#[test]
fn swap_limit_only_where_the_host_accounts_swap() {
    let opts = RunOptions {
        memory: Some(64 << 20),
        ..Default::default()
    };
    let with = HostFacts {
        swap_accounting: true,
        ..facts()
    };
    let mem = json(&gen(&opts, with).unwrap())["linux"]["resources"]["memory"].clone();
    assert_eq!(mem["limit"], 64 << 20);
    assert_eq!(
        mem["swap"],
        128 << 20,
        "docker: swap defaults to twice the memory"
    );
    let mem = json(&gen(&opts, facts()).unwrap())["linux"]["resources"]["memory"].clone();
    assert_eq!(mem["limit"], 64 << 20);
    assert!(mem.get("swap").is_none());
}

#[test]
fn a_missing_controller_in_the_facts_names_the_option() {
    let opts = RunOptions {
        pids_limit: Some(50),
        ..Default::default()
    };
    let f = HostFacts {
        controllers: Some(Controllers {
            available: vec!["cpu".into(), "memory".into()],
            version: "v2",
            source_desc: "/sys/fs/cgroup/cgroup.controllers".into(),
        }),
        ..facts()
    };
    let err = gen(&opts, f).unwrap_err();
    assert!(matches!(err, BundleError::Cgroup(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("--pids-limit") && msg.contains("\"pids\""),
        "{msg}"
    );
    let f = HostFacts {
        controllers: Some(Controllers {
            available: vec!["pids".into()],
            version: "v2",
            source_desc: String::new(),
        }),
        ..facts()
    };
    let res = json(&gen(&opts, f).unwrap())["linux"]["resources"].clone();
    assert_eq!(res["pids"]["limit"], 50);
}

#[test]
fn bind_sources_the_facts_call_missing_are_refused() {
    let src = PathBuf::from("/srv/data");
    let opts = RunOptions {
        mounts: vec![VolumeMount {
            source: VolumeSource::Bind(src.clone()),
            target: "/data".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    let f = HostFacts {
        missing_bind_sources: vec![src.clone()],
        ..facts()
    };
    match gen(&opts, f) {
        Err(BundleError::MissingBindSource(p)) => assert_eq!(p, src),
        other => panic!("want MissingBindSource, got {other:?}"),
    }
    let b = gen(&opts, facts()).unwrap();
    let m = json(&b)["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .cloned()
        .unwrap();
    assert_eq!(m["source"], "/srv/data");
    assert_eq!(m["options"], serde_json::json!(["rbind", "rprivate", "ro"]));
}

#[test]
fn user_is_resolved_against_the_image_users_in_the_facts() {
    let opts = RunOptions {
        user: Some("web".into()),
        ..Default::default()
    };
    let p = json(&gen(&opts, facts()).unwrap())["process"].clone();
    assert_eq!(p["user"]["uid"], 33);
    assert_eq!(p["user"]["gid"], 33);
    assert_eq!(p["user"]["additionalGids"], serde_json::json!([4]));
    assert!(p["env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("HOME=/var/www")));

    let unreadable = || HostFacts {
        image_users: Err(UserError::Io {
            path: "/etc/passwd",
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        }),
        ..HostFacts::default()
    };
    let err = gen(&opts, unreadable()).unwrap_err();
    assert!(
        matches!(err, BundleError::User(UserError::Io { .. })),
        "{err:?}"
    );
    // The order of checks is the generator's: no command is reported before the user.
    let err = gen_image(serde_json::json!({}), &opts, unreadable()).unwrap_err();
    assert!(matches!(err, BundleError::NoCommand), "{err:?}");
}

#[test]
fn cpus_are_checked_against_the_host_cpus_in_the_facts() {
    let opts = RunOptions {
        cpus: Some(3.0),
        ..Default::default()
    };
    let two = || HostFacts {
        host_cpus: 2,
        ..facts()
    };
    let err = gen(&opts, two()).unwrap_err();
    assert!(matches!(err, BundleError::InvalidOption(_)), "{err:?}");
    let opts = RunOptions {
        cpus: Some(1.5),
        ..Default::default()
    };
    let cpu = json(&gen(&opts, two()).unwrap())["linux"]["resources"]["cpu"].clone();
    assert_eq!(cpu["quota"], 150_000);
    assert_eq!(cpu["period"], 100_000);
}

#[test]
fn gathering_reads_only_what_the_request_needs() {
    let img = image(serde_json::json!({"Cmd": ["sh"]}));
    let opts = RunOptions::default();
    let rootfs = tempfile::tempdir().unwrap();
    let f = HostFacts::gather(&ContainerSpec {
        id: "c1",
        container_dir: Path::new("/nonexistent/c1"),
        rootfs: rootfs.path(),
        image: &img,
        options: &opts,
    });
    assert!(f.devices.is_empty(), "device list only for --privileged");
    assert!(
        f.etc_hosts.is_none(),
        "host /etc/hosts only for --network host"
    );
    assert!(
        f.controllers.is_none(),
        "controllers only for resource options"
    );
    assert_eq!(f.hostname, "", "host name only for --network host");
    assert_eq!(f.host_cpus, 0, "CPU count only for --cpus");
    assert!(!f.swap_accounting, "swap accounting only for --memory");
    // A rootfs without /etc/passwd is an empty user database, as docker treats it.
    assert_eq!(f.image_users.unwrap(), ImageUsers::default());
}

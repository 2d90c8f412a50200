//! `rename` with real containers: the new name everywhere (ps, inspect, other verbs), the
//! old one free, a taken name refused, and the bridge network's DNS answering the new name.

mod common;

use common::{daemon_with_busybox, require_tools, run, TestDaemon};

fn names(d: &TestDaemon) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rename_moves_the_name_and_refuses_taken_or_bad_ones() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let id = d.ok(&["run", "-d", "--name", "old", &image, "sleep", "300"]);
    let id = id.trim();
    d.ok(&["run", "-d", "--name", "other", &image, "sleep", "300"]);
    assert_eq!(d.ok(&["rename", "old", "new"]), "", "rename prints nothing");
    let mut n = names(&d);
    n.sort();
    assert_eq!(n, ["new", "other"]);
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "new"])).unwrap();
    assert_eq!(v[0]["id"], id);
    assert_eq!(v[0]["name"], "new");
    let (code, _, err) = run(&d, &["inspect", "old"]);
    assert_ne!(code, 0, "{err}");
    // Other verbs follow the new name; an id prefix renames as well.
    assert_eq!(d.ok(&["exec", "new", "echo", "hi"]).trim(), "hi");
    d.ok(&["rename", &id[..12], "newer"]);
    assert!(names(&d).contains(&"newer".to_string()));

    // Taken, the same, invalid, or no such container: exit 1 and a message naming it.
    let (code, _, err) = run(&d, &["rename", "newer", "other"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"other\" is already in use"), "{err}");
    let (code, _, err) = run(&d, &["rename", "newer", "newer"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already named"), "{err}");
    let (code, _, err) = run(&d, &["rename", "newer", "bad/name"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad/name"), "{err}");
    let (code, _, err) = run(&d, &["rename", "ghost", "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ghost"), "{err}");
    let mut n = names(&d);
    n.sort();
    assert_eq!(n, ["newer", "other"], "a refused rename changed nothing");

    // The old names are free again; a stopped container can be renamed too.
    d.ok(&["run", "-d", "--name", "old", &image, "true"]);
    d.ok(&["wait", "old"]);
    d.ok(&["rename", "old", "done"]);
    assert!(names(&d).contains(&"done".to_string()));
}

#[test]
fn a_renamed_container_answers_to_its_new_name_on_the_bridge_dns() {
    if !require_tools(&["/usr/lib/cni/bridge"]) {
        return;
    }
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&["run", "-d", "--name", "alpha", &image, "sleep", "300"]);
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "alpha"])).unwrap();
    let ip = v[0]["network"]["ips"][0]
        .as_str()
        .unwrap_or_else(|| panic!("alpha has no IP: {v}"))
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // busybox's own resolver, through the network's DNS server.
    let resolve = |name: &str| {
        let cmd = format!(
            "nslookup -type=a {name} 2>/dev/null | awk '/^Address: /{{print $2}}' | tail -n 1"
        );
        d.ok(&["run", "--rm", &image, "sh", "-c", &cmd])
            .trim()
            .to_string()
    };
    assert_eq!(resolve("alpha"), ip, "{}", d.log());
    d.ok(&["rename", "alpha", "beta"]);
    assert_eq!(resolve("beta"), ip, "{}", d.log());
    assert_eq!(resolve("alpha"), "", "the old name still resolves");
}

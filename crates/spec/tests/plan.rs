//! Deploy plans and spec hashes.

use zlayer_spec::{parse_str, plan, Action, Deployment};

fn d(services: &str) -> Deployment {
    parse_str(
        &format!("version: v1\ndeployment: demo\nservices:\n{services}"),
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

const BASE: &str =
    "  web:\n    image: img:1\n    replicas: 2\n    env: {A: \"1\"}\n  db:\n    image: db:1\n";

#[test]
fn first_deploy_creates_everything() {
    let p = plan(&d(BASE), None);
    assert_eq!(p.services.len(), 2);
    assert_eq!(p.services[0].name, "db");
    assert_eq!(p.services[0].action, Action::Create { replicas: 1 });
    assert_eq!(p.services[1].action, Action::Create { replicas: 2 });
    assert_eq!(
        p.to_string(),
        "deployment \"demo\": 2 to create, 0 to update, 0 to remove, 0 unchanged\n  + db (service): create 1 replica\n  + web (service): create 2 replicas\n"
    );
}

#[test]
fn same_file_is_a_noop() {
    let p = plan(&d(BASE), Some(&d(BASE)));
    assert!(p.is_noop());
    assert!(p.to_string().contains("= web (service): unchanged"));
}

#[test]
fn defaults_written_out_are_not_a_change() {
    let explicit = d("  web:\n    image: {name: img:1, pull_policy: if_not_present}\n    replicas: 2\n    env: {A: \"1\"}\n    restart: {policy: always}\n    network: bridge\n  db:\n    image: db:1\n    replicas: 1\n");
    assert!(plan(&explicit, Some(&d(BASE))).is_noop());
}

#[test]
fn scaling_only() {
    let p = plan(
        &d(&BASE.replace("replicas: 2", "replicas: 5")),
        Some(&d(BASE)),
    );
    assert_eq!(
        p.services[1].action,
        Action::Update {
            changed: vec!["replicas".into()],
            replace: false,
            scale: Some((2, 5))
        }
    );
    assert!(
        p.to_string()
            .contains("~ web (service): scale 2 -> 5 (changed: replicas)"),
        "{p}"
    );
}

#[test]
fn image_change_is_a_rolling_update() {
    let p = plan(
        &d(&BASE
            .replace("img:1", "img:2")
            .replace("replicas: 2", "replicas: 3")),
        Some(&d(BASE)),
    );
    assert_eq!(
        p.services[1].action,
        Action::Update {
            changed: vec!["image".into(), "replicas".into()],
            replace: true,
            scale: Some((2, 3))
        }
    );
    assert!(
        p.to_string()
            .contains("~ web (service): rolling update, scale 2 -> 3 (changed: image, replicas)"),
        "{p}"
    );
}

#[test]
fn env_change_replaces_health_change_does_not() {
    let p = plan(&d(&BASE.replace("A: \"1\"", "A: \"2\"")), Some(&d(BASE)));
    assert!(
        matches!(&p.services[1].action, Action::Update { replace: true, changed, .. } if changed == &["env"])
    );

    let with_health = BASE.replace(
        "    replicas: 2\n",
        "    replicas: 2\n    health: {check: {type: tcp, port: 80}}\n",
    );
    let p = plan(&d(&with_health), Some(&d(BASE)));
    assert_eq!(
        p.services[1].action,
        Action::Update {
            changed: vec!["health".into()],
            replace: false,
            scale: None
        }
    );
    assert!(
        p.to_string()
            .contains("update settings, running replicas kept (changed: health)"),
        "{p}"
    );

    let pull = BASE.replace("image: img:1", "image: {name: img:1, pull_policy: always}");
    let p = plan(&d(&pull), Some(&d(BASE)));
    assert_eq!(
        p.services[1].action,
        Action::Update {
            changed: vec!["image.pull_policy".into()],
            replace: false,
            scale: None
        }
    );
}

#[test]
fn removed_services() {
    let p = plan(
        &d("  web:\n    image: img:1\n    replicas: 2\n    env: {A: \"1\"}\n"),
        Some(&d(BASE)),
    );
    assert_eq!(p.services[0].name, "db");
    assert_eq!(p.services[0].action, Action::Remove);
    assert!(p.to_string().starts_with("deployment \"demo\": 0 to create, 0 to update, 1 to remove, 1 unchanged\n  - db (service): remove\n"), "{p}");
}

#[test]
fn jobs_and_cron_wording() {
    let old = d("  j:\n    kind: job\n    image: a\n  c:\n    kind: cron\n    schedule: \"@daily\"\n    image: a\n");
    let new = d("  j:\n    kind: job\n    image: b\n  c:\n    kind: cron\n    schedule: \"@hourly\"\n    image: b\n");
    let text = plan(&new, Some(&old)).to_string();
    assert!(
        text.contains("~ c (cron): next runs use the new spec (changed: image, schedule)"),
        "{text}"
    );
    assert!(
        text.contains("~ j (job): run again (changed: image)"),
        "{text}"
    );
    let text = plan(&old, None).to_string();
    assert!(
        text.contains("+ c (cron): schedule") && text.contains("+ j (job): run"),
        "{text}"
    );
}

#[test]
fn spec_hash_is_stable_and_selective() {
    let a = d(BASE);
    let h = a.services["web"].spec_hash();
    assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
    // Same input, same hash; independent of replicas, health and restart settings.
    assert_eq!(d(BASE).services["web"].spec_hash(), h);
    let scaled = d(&BASE.replace("replicas: 2", "replicas: 9"));
    assert_eq!(scaled.services["web"].spec_hash(), h);
    let restart = d(&BASE.replace(
        "    replicas: 2\n",
        "    replicas: 2\n    restart: {policy: on-failure}\n",
    ));
    assert_eq!(restart.services["web"].spec_hash(), h);
    // Container-shaping changes change it.
    for change in [
        ("img:1", "img:2"),
        ("A: \"1\"", "A: \"1\", B: x"),
        ("replicas: 2", "replicas: 2\n    user: \"1000\""),
    ] {
        let other = d(&BASE.replace(change.0, change.1));
        assert_ne!(other.services["web"].spec_hash(), h, "{change:?}");
    }
    // Pinned value: the hash is part of the agent's stored state, so it must not drift between
    // builds. If this changes on purpose, bump the `format` string in HashInput.
    let pinned = d("  web:\n    image: busybox\n");
    assert_eq!(pinned.services["web"].spec_hash(), PINNED_HASH);
}

/// sha256 of the canonical JSON
/// `{"format":"zlayer-spec-hash-v1","kind":"service","image":"busybox","command":{},"env":{},
/// "env_file":[],"secrets":[],"resources":{},"endpoints":[],"storage":[],"user":null,
/// "hostname":null,"network":"bridge"}` (checked with `sha256sum`).
const PINNED_HASH: &str = "sha256:a752f6a15e19786624bb50b7414c4b444de8be385957befcc9d59820be416bb0";

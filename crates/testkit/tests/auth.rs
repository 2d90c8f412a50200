//! Registries that need credentials: docker-registry with htpasswd basic auth, and the
//! FlakyProxy's bearer-token mode in front of a registry — both checked with skopeo as an
//! independent client.

mod common;

use std::process::Command;

use zlayer_testkit::flaky_proxy::{FlakyProxy, TOKEN_SERVICE};
use zlayer_testkit::{fixtures, push, require_bin, LocalRegistry};

fn skopeo_pull(skopeo: &std::path::Path, src: &str, creds: Option<&str>) -> std::process::Output {
    let t = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(skopeo);
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
    ]);
    if let Some(c) = creds {
        cmd.arg(format!("--src-creds={c}"));
    }
    cmd.arg(src)
        .arg(format!("oci:{}:x", t.path().join("out").display()));
    cmd.output().unwrap()
}

#[test]
fn basic_auth_registry_requires_credentials() {
    let _ = require_bin!("docker-registry");
    let skopeo = require_bin!("skopeo");
    let reg = LocalRegistry::start_with_basic_auth("alice", "s3cret").unwrap();
    match ureq::get(&format!("{}/v2/", reg.url())).call() {
        Err(ureq::Error::Status(401, r)) => {
            let h = r.header("WWW-Authenticate").unwrap_or_default().to_string();
            assert!(h.starts_with("Basic"), "{h}");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let layout = fixtures::cached("busybox").unwrap();
    let err = push::push_layout(&layout, &reg.host(), "auth/busybox:1").unwrap_err();
    assert!(format!("{err:#}").contains("skopeo copy"), "{err:#}");
    let d = push::push_layout_with_creds(&layout, &reg.host(), "auth/busybox:1", "alice", "s3cret")
        .unwrap();
    assert_eq!(d, layout.manifest_digest);
    assert!(push::manifest_digest(&reg.host(), "auth/busybox", "1").is_err());
    assert!(push::manifest_digest_with_creds(
        &reg.host(),
        "auth/busybox",
        "1",
        Some(("alice", "wrong"))
    )
    .is_err());
    let src = format!("docker://{}/auth/busybox:1", reg.host());
    assert!(skopeo_pull(&skopeo, &src, Some("alice:s3cret"))
        .status
        .success());
    assert!(!skopeo_pull(&skopeo, &src, Some("alice:nope"))
        .status
        .success());
}

#[test]
fn token_auth_proxy_runs_the_bearer_flow() {
    let _ = require_bin!("docker-registry");
    let skopeo = require_bin!("skopeo");
    let reg = LocalRegistry::start().unwrap();
    let layout = fixtures::cached("busybox").unwrap();
    push::push_layout(&layout, &reg.host(), "tok/busybox:1").unwrap();
    let proxy = FlakyProxy::start_with_token_auth(reg.addr(), "bob", "pw").unwrap();

    // Challenge names realm, service and scope.
    let url = format!("http://{}/v2/tok/busybox/manifests/1", proxy.host());
    let challenge = match ureq::get(&url).set("Accept", push::MANIFEST_ACCEPT).call() {
        Err(ureq::Error::Status(401, r)) => r.header("WWW-Authenticate").unwrap().to_string(),
        other => panic!("expected 401, got {other:?}"),
    };
    let realm = format!("http://{}/token", proxy.host());
    assert!(
        challenge.contains(&format!("realm=\"{realm}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{TOKEN_SERVICE}\"")),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:tok/busybox:pull\""),
        "{challenge}"
    );

    // Anonymous token requests are refused; with credentials a token is issued.
    let token_url = format!("{realm}?service={TOKEN_SERVICE}&scope=repository:tok/busybox:pull");
    assert!(matches!(
        ureq::get(&token_url).call(),
        Err(ureq::Error::Status(401, _))
    ));
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("bob:pw");
    let tok: serde_json::Value = serde_json::from_str(
        &ureq::get(&token_url)
            .set("Authorization", &format!("Basic {basic}"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let token = tok["token"].as_str().unwrap();
    let resp = ureq::get(&url)
        .set("Accept", push::MANIFEST_ACCEPT)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.header("Docker-Content-Digest"),
        Some(layout.manifest_digest.as_str())
    );
    assert!(matches!(
        ureq::get(&url).set("Authorization", "Bearer forged").call(),
        Err(ureq::Error::Status(401, _))
    ));

    // A real client (skopeo) completes the whole flow.
    let src = format!("docker://{}/tok/busybox:1", proxy.host());
    let out = skopeo_pull(&skopeo, &src, Some("bob:pw"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!skopeo_pull(&skopeo, &src, Some("bob:bad")).status.success());
    assert!(proxy
        .token_scopes()
        .iter()
        .any(|s| s == "repository:tok/busybox:pull"));
}

//! OCI-archive and docker-save outputs are accepted by skopeo; the FlakyProxy injects
//! faults in front of a real registry.

mod common;

use std::io::Read;
use std::process::Command;

use common::run;
use zlayer_testkit::fixtures::{self, archive};
use zlayer_testkit::flaky_proxy::{Fault, FlakyProxy};
use zlayer_testkit::{push, require_bin, LocalRegistry};

#[test]
fn oci_archive_is_accepted_by_skopeo_and_reproducible() {
    let skopeo = require_bin!("skopeo");
    let layout = fixtures::cached("busybox").unwrap();
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a.tar");
    let b = t.path().join("b.tar");
    archive::write_oci_archive(&layout, &a).unwrap();
    archive::write_oci_archive(&layout, &b).unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let raw = run(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:latest", a.display()),
    ]));
    assert_eq!(
        fixtures::sha256_digest(raw.as_bytes()),
        layout.manifest_digest
    );
}

#[test]
fn docker_save_is_accepted_by_skopeo_for_every_compression() {
    let skopeo = require_bin!("skopeo");
    let t = tempfile::tempdir().unwrap();
    for name in ["busybox", "rules"] {
        let layout = fixtures::cached(name).unwrap();
        let out = t.path().join(format!("{name}.tar"));
        archive::write_docker_save(&layout, &format!("zlayer/{name}:test"), &out).unwrap();
        let cfg = run(Command::new(&skopeo).args([
            "inspect",
            "--config",
            "--raw",
            &format!("docker-archive:{}", out.display()),
        ]));
        assert_eq!(
            fixtures::sha256_digest(cfg.as_bytes()),
            layout.config_digest
        );
        let info: serde_json::Value =
            serde_json::from_str(&run(Command::new(&skopeo)
                .args(["inspect", &format!("docker-archive:{}", out.display())])))
            .unwrap();
        let want: Vec<&str> = layout.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let got: Vec<&str> = info["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{name}: docker-archive layers are the diff ids");
        // skopeo does not report RepoTags for archives: read manifest.json ourselves.
        let mut tar = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let mut manifest = None;
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("manifest.json") {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                manifest = Some(serde_json::from_str::<serde_json::Value>(&s).unwrap());
            }
        }
        let manifest = manifest.expect("manifest.json in docker-save tar");
        assert_eq!(manifest[0]["RepoTags"][0], format!("zlayer/{name}:test"));
    }
}

#[test]
fn flaky_proxy_injects_status_and_dropped_connection() {
    let _ = require_bin!("docker-registry");
    let _ = require_bin!("skopeo");
    let reg = LocalRegistry::start().unwrap();
    let layout = fixtures::cached("busybox").unwrap();
    push::push_layout(&layout, &reg.host(), "flaky/busybox:1").unwrap();
    let proxy = FlakyProxy::start(reg.addr()).unwrap();
    let base = format!("http://{}/v2/flaky/busybox", proxy.host());

    // A 500 once, then the real answer.
    proxy.add_fault(Some("GET"), "/manifests/", Fault::Status(500), 1);
    let url = format!("{base}/manifests/1");
    let accept = push::MANIFEST_ACCEPT;
    match ureq::get(&url).set("Accept", accept).call() {
        Err(ureq::Error::Status(500, _)) => {}
        other => panic!("expected injected 500, got {other:?}"),
    }
    assert_eq!(
        push::manifest_digest(&proxy.host(), "flaky/busybox", "1").unwrap(),
        layout.manifest_digest
    );

    // A blob download cut after 1000 bytes, then resumed with Range.
    let layer = &layout.layers[0];
    proxy.add_fault(Some("GET"), "/blobs/", Fault::DropAfterBodyBytes(1000), 1);
    let blob_url = format!("{base}/blobs/{}", layer.digest);
    let mut first = Vec::new();
    let r = ureq::get(&blob_url).call().unwrap();
    let res = r.into_reader().read_to_end(&mut first);
    assert!(
        res.is_err() || (first.len() as u64) < layer.size,
        "download was not cut"
    );
    assert_eq!(first.len(), 1000);
    let resp = ureq::get(&blob_url)
        .set("Range", &format!("bytes={}-", first.len()))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 206);
    let mut rest = Vec::new();
    resp.into_reader().read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert_eq!(fixtures::sha256_digest(&first), layer.digest);

    let log = proxy.requests();
    assert!(log.iter().any(|r| r.fault == Some(Fault::Status(500))));
    assert!(log
        .iter()
        .any(|r| r.range.as_deref() == Some("bytes=1000-")));
}

//! Pushes fixture layouts to a registry with `skopeo copy --preserve-digests` and checks
//! that the registry serves the manifest under the layout's digest.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use crate::fixtures::{media_types, Layout, MULTIARCH_TAG};

/// `Accept` header for manifest GETs: OCI and Docker manifests and indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Splits `repo:tag` (the tag is after the last `:` that follows the last `/`).
pub fn split_repo_tag(dest: &str) -> Result<(&str, &str)> {
    let slash = dest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match dest[slash..].rfind(':') {
        Some(i) if i > 0 && slash + i + 1 < dest.len() => {
            Ok((&dest[..slash + i], &dest[slash + i + 1..]))
        }
        _ => bail!("destination {dest:?} is not of the form REPO:TAG"),
    }
}

/// Pushes the layout's linux/amd64 image (tag [`Layout::tag`]) to `registry_host` as
/// `dest` (`repo:tag`); returns the pushed manifest digest, checked equal to
/// [`Layout::manifest_digest`].
pub fn push_layout(layout: &Layout, registry_host: &str, dest: &str) -> Result<String> {
    push_tag(
        &layout.dir,
        &layout.tag,
        registry_host,
        dest,
        Some(&layout.manifest_digest),
        None,
    )
}

/// [`push_layout`] to a registry that requires basic auth (`user`, `password`).
pub fn push_layout_with_creds(
    layout: &Layout,
    registry_host: &str,
    dest: &str,
    user: &str,
    password: &str,
) -> Result<String> {
    push_tag(
        &layout.dir,
        &layout.tag,
        registry_host,
        dest,
        Some(&layout.manifest_digest),
        Some((user, password)),
    )
}

/// Pushes the layout's multi-platform index (tag [`MULTIARCH_TAG`]) with all its images;
/// returns the index digest, checked equal to [`Layout::index_digest`].
pub fn push_multiarch(layout: &Layout, registry_host: &str, dest: &str) -> Result<String> {
    let Some(index) = &layout.index_digest else {
        bail!("fixture {} has no multi-platform index", layout.name);
    };
    push_tag(
        &layout.dir,
        MULTIARCH_TAG,
        registry_host,
        dest,
        Some(index),
        None,
    )
}

/// Pushes tag `src_tag` of the OCI layout `layout_dir` to `docker://HOST/dest` with
/// `skopeo copy --preserve-digests` (plus `--all` when the tag names an image index).
/// When `expected_digest` is given, the digest the registry serves must equal it.
/// `creds` (user, password) are used for a registry with basic auth.
pub fn push_tag(
    layout_dir: &Path,
    src_tag: &str,
    registry_host: &str,
    dest: &str,
    expected_digest: Option<&str>,
    creds: Option<(&str, &str)>,
) -> Result<String> {
    let (repo, tag) = split_repo_tag(dest)?;
    let mt = tag_media_type(layout_dir, src_tag)?;
    let is_index = mt == media_types::IMAGE_INDEX || mt == media_types::DOCKER_MANIFEST_LIST;
    let skopeo = crate::prereq::find_bin("skopeo")
        .context("`skopeo` not found (Debian package `skopeo`)")?;
    let mut cmd = Command::new(skopeo);
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ])
    .arg("--preserve-digests");
    if is_index {
        cmd.arg("--all");
    }
    if let Some((user, password)) = creds {
        cmd.arg(format!("--dest-creds={user}:{password}"));
    }
    cmd.arg(format!("oci:{}:{src_tag}", layout_dir.display()))
        .arg(format!("docker://{registry_host}/{repo}:{tag}"));
    let out = cmd.output().context("running skopeo copy")?;
    if !out.status.success() {
        bail!(
            "skopeo copy oci:{}:{src_tag} -> {registry_host}/{dest} failed ({}): {}",
            layout_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let got = manifest_digest_with_creds(registry_host, repo, tag, creds)?;
    if let Some(want) = expected_digest {
        if got != want {
            bail!("registry {registry_host} serves {dest} as {got}, but the layout has {want}");
        }
    }
    Ok(got)
}

/// Media type of the `index.json` entry tagged `tag`.
fn tag_media_type(layout_dir: &Path, tag: &str) -> Result<String> {
    Ok(tag_descriptor(layout_dir, tag)?.0)
}

/// GETs `/v2/<repo>/manifests/<reference>` over plain HTTP and returns the sha256 of the
/// body (also checked against the `Docker-Content-Digest` header when present).
pub fn manifest_digest(registry_host: &str, repo: &str, reference: &str) -> Result<String> {
    manifest_digest_with_creds(registry_host, repo, reference, None)
}

/// [`manifest_digest`] with optional basic-auth credentials.
pub fn manifest_digest_with_creds(
    registry_host: &str,
    repo: &str,
    reference: &str,
    creds: Option<(&str, &str)>,
) -> Result<String> {
    use base64::Engine as _;
    let url = format!("http://{registry_host}/v2/{repo}/manifests/{reference}");
    let mut req = ureq::get(&url)
        .set("Accept", MANIFEST_ACCEPT)
        .timeout(Duration::from_secs(30));
    if let Some((user, password)) = creds {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        req = req.set("Authorization", &format!("Basic {b}"));
    }
    let resp = req.call().with_context(|| format!("GET {url}"))?;
    let header = resp.header("Docker-Content-Digest").map(str::to_string);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body)
        .with_context(|| format!("reading body of {url}"))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if let Some(h) = header {
        if h != digest {
            bail!("{url}: Docker-Content-Digest {h} but body hashes to {digest}");
        }
    }
    Ok(digest)
}

/// Registry push done by the testkit itself over the distribution HTTP API (blob upload
/// POST + monolithic PUT, manifest PUT), so any layout can be pushed byte for byte — also
/// ones skopeo's `oci:` transport will not read (Docker media types inside a layout, e.g.
/// the `busybox-docker` fixture). Pushes tag `src_tag` of `layout_dir` as `dest`
/// (`repo:tag`): for an index, each child manifest (by digest) first. Returns the digest
/// of the top manifest/index as served by the registry.
pub fn push_tag_http(
    layout_dir: &Path,
    src_tag: &str,
    registry_host: &str,
    dest: &str,
    creds: Option<(&str, &str)>,
) -> Result<String> {
    let (repo, tag) = split_repo_tag(dest)?;
    let (media_type, digest) = tag_descriptor(layout_dir, src_tag)?;
    let client = HttpPusher {
        base: format!("http://{registry_host}/v2/{repo}"),
        layout_dir,
        auth: creds.map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        }),
    };
    client.push_manifest_tree(&media_type, &digest, Some(tag))?;
    let got = manifest_digest_with_creds(registry_host, repo, tag, creds)?;
    if got != digest {
        bail!("registry {registry_host} serves {dest} as {got}, but the layout has {digest}");
    }
    Ok(got)
}

/// [`push_tag_http`] of the layout's main tag, checked against [`Layout::manifest_digest`].
pub fn push_layout_http(layout: &Layout, registry_host: &str, dest: &str) -> Result<String> {
    let d = push_tag_http(&layout.dir, &layout.tag, registry_host, dest, None)?;
    if d != layout.manifest_digest {
        bail!("pushed {d}, layout says {}", layout.manifest_digest);
    }
    Ok(d)
}

struct HttpPusher<'a> {
    base: String,
    layout_dir: &'a Path,
    auth: Option<String>,
}

impl HttpPusher<'_> {
    fn req(&self, method: &str, url: &str) -> ureq::Request {
        let r = ureq::request(method, url).timeout(Duration::from_secs(120));
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    fn blob_path(&self, digest: &str) -> std::path::PathBuf {
        self.layout_dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        std::fs::read(&p).with_context(|| format!("reading blob {}", p.display()))
    }

    fn push_blob(&self, digest: &str) -> Result<()> {
        let head = format!("{}/blobs/{digest}", self.base);
        match self.req("HEAD", &head).call() {
            Ok(_) => return Ok(()),
            Err(ureq::Error::Status(404, _)) => {}
            Err(e) => return Err(e).with_context(|| format!("HEAD {head}")),
        }
        let start = format!("{}/blobs/uploads/", self.base);
        let resp = self
            .req("POST", &start)
            .call()
            .with_context(|| format!("POST {start}"))?;
        let loc = resp
            .header("Location")
            .with_context(|| format!("POST {start}: no Location header"))?;
        let loc = if loc.starts_with('/') {
            let host_end = self.base[7..].find('/').map_or(self.base.len(), |i| i + 7);
            format!("{}{loc}", &self.base[..host_end])
        } else {
            loc.to_string()
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{loc}{sep}digest={digest}");
        let path = self.blob_path(digest);
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        self.req("PUT", &url)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &len.to_string())
            .send(file)
            .with_context(|| format!("uploading blob {digest} ({len} bytes)"))?;
        Ok(())
    }

    /// Pushes a manifest's blobs (or an index's manifests), then the manifest itself,
    /// under `tag` or, without one, under its digest.
    fn push_manifest_tree(&self, media_type: &str, digest: &str, tag: Option<&str>) -> Result<()> {
        let bytes = self.read_blob(digest)?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {digest}"))?;
        if let Some(children) = v["manifests"].as_array() {
            for c in children {
                let (Some(mt), Some(d)) = (c["mediaType"].as_str(), c["digest"].as_str()) else {
                    bail!("index {digest}: entry without mediaType/digest: {c}");
                };
                self.push_manifest_tree(mt, d, None)?;
            }
        } else {
            let config = v["config"]["digest"]
                .as_str()
                .with_context(|| format!("manifest {digest} has no config digest"))?;
            self.push_blob(config)?;
            for l in v["layers"].as_array().cloned().unwrap_or_default() {
                let d = l["digest"]
                    .as_str()
                    .with_context(|| format!("manifest {digest}: layer without digest"))?;
                self.push_blob(d)?;
            }
        }
        let reference = tag.unwrap_or(digest);
        let url = format!("{}/manifests/{reference}", self.base);
        self.req("PUT", &url)
            .set("Content-Type", media_type)
            .send_bytes(&bytes)
            .with_context(|| format!("PUT {url}"))?;
        Ok(())
    }
}

/// (media type, digest) of the `index.json` entry tagged `tag`.
fn tag_descriptor(layout_dir: &Path, tag: &str) -> Result<(String, String)> {
    let path = layout_dir.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    for e in index["manifests"].as_array().cloned().unwrap_or_default() {
        if e["annotations"]["org.opencontainers.image.ref.name"] == tag {
            let mt = e["mediaType"].as_str().unwrap_or_default().to_string();
            let d = e["digest"]
                .as_str()
                .with_context(|| format!("{}: entry {tag:?} has no digest", path.display()))?;
            return Ok((mt, d.to_string()));
        }
    }
    bail!("{} has no entry tagged {tag:?}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_repo_and_tag() {
        assert_eq!(split_repo_tag("a/b:t").unwrap(), ("a/b", "t"));
        assert_eq!(
            split_repo_tag("busybox:latest").unwrap(),
            ("busybox", "latest")
        );
        assert!(split_repo_tag("busybox").is_err());
        assert!(split_repo_tag("busybox:").is_err());
        assert!(split_repo_tag("host:5000/repo").is_err());
    }
}

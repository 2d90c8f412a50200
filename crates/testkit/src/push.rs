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
    let is_index = tag_media_type(layout_dir, src_tag)? == media_types::IMAGE_INDEX;
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
    let path = layout_dir.join("index.json");
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    for e in entries {
        if e["annotations"]["org.opencontainers.image.ref.name"] == tag {
            return Ok(e["mediaType"].as_str().unwrap_or_default().to_string());
        }
    }
    bail!("{} has no entry tagged {tag:?}", path.display())
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

//! Where layer blobs come from: a [`LayerSource`] (a registry client, a local OCI image layout)
//! and, when it answers "not found", the descriptor's `urls` mirrors over HTTP(S).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::parse_digest;
use crate::error::{Error, IoContext, Result};

/// A layer from a platform-resolved manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ResolvedLayerDescriptor {
    pub digest: String,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub size: u64,
    /// Mirrors of a foreign layer (Microsoft serves base layers from its CDN).
    #[serde(default)]
    pub urls: Vec<String>,
}

/// The image config blob of the platform-resolved manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ConfigDescriptor {
    pub digest: String,
    pub size: u64,
}

/// A Windows image to unpack: its reference (for messages and registry calls) and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsImage {
    pub reference: String,
    pub config: ConfigDescriptor,
}

/// Credentials for the registry; sources that need none ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

/// The outcome of asking a source for a blob.
pub enum BlobFetch {
    /// The blob's bytes, streamed.
    Found(Box<dyn Read + Send>),
    /// The source does not have it (a registry's 404): try the `urls`.
    NotFound,
}

/// A place blobs can be fetched from. Blocking on purpose: conversion is blocking file I/O;
/// an async registry client adapts with a runtime handle and a sync bridge.
pub trait LayerSource: Send + Sync {
    /// Opens the blob `digest` of `image`. Digest and size are verified by the caller.
    fn fetch_blob(
        &self,
        image: &str,
        auth: &RegistryAuth,
        digest: &str,
        size: u64,
    ) -> Result<BlobFetch>;
}

/// Opens a layer blob, falling back to the descriptor's `urls` (in order) when the source does
/// not have it. A mirror's announced length must match the descriptor's size.
pub fn open_layer_blob(
    source: &dyn LayerSource,
    image: &str,
    auth: &RegistryAuth,
    desc: &ResolvedLayerDescriptor,
) -> Result<Box<dyn Read + Send>> {
    if let BlobFetch::Found(r) = source.fetch_blob(image, auth, &desc.digest, desc.size)? {
        return Ok(r);
    }
    if desc.urls.is_empty() {
        return Err(Error::Fetch {
            what: format!("layer {} of {image}", desc.digest),
            reason: "not found, and the descriptor lists no urls to fall back to".into(),
        });
    }
    let mut failures = Vec::new();
    for url in &desc.urls {
        match fetch_url(url, desc.size) {
            Ok(r) => return Ok(r),
            Err(e) => {
                tracing::warn!(url, error = %e, "foreign layer mirror failed");
                failures.push(format!("{url}: {e}"));
            }
        }
    }
    Err(Error::Fetch {
        what: format!("layer {} of {image}", desc.digest),
        reason: format!(
            "not found in the registry; every url failed: {}",
            failures.join("; ")
        ),
    })
}

/// GETs `url` (http or https) and checks the announced length against `size`. The body is
/// capped at `size + 1` bytes so a wrong mirror cannot stream forever; the caller's size and
/// digest checks then report it.
pub fn fetch_url(url: &str, size: u64) -> Result<Box<dyn Read + Send>> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Fetch {
            what: url.into(),
            reason: "only http and https urls are supported".into(),
        });
    }
    // Connect and per-read timeouts, no overall one: a multi-GiB base layer takes a while, but a
    // mirror that stops sending must not hang the pull.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(30))
        .timeout_read(std::time::Duration::from_secs(120))
        .build();
    let resp = agent.get(url).call().map_err(|e| Error::Fetch {
        what: url.into(),
        reason: e.to_string(),
    })?;
    if let Some(len) = resp.header("Content-Length") {
        let len: u64 = len.trim().parse().map_err(|_| Error::Fetch {
            what: url.into(),
            reason: format!("bad Content-Length {len:?}"),
        })?;
        if len != size {
            return Err(Error::Fetch {
                what: url.into(),
                reason: format!("serves {len} bytes, the descriptor says {size}"),
            });
        }
    }
    Ok(Box::new(resp.into_reader().take(size + 1)))
}

/// A local OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`).
#[derive(Debug, Clone)]
pub struct OciLayoutSource {
    root: PathBuf,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

impl OciLayoutSource {
    /// Opens the layout at `root` (checks that `oci-layout` exists).
    pub fn open(root: &Path) -> Result<Self> {
        let marker = root.join("oci-layout");
        std::fs::metadata(&marker).ctx("opening OCI layout marker", &marker)?;
        Ok(OciLayoutSource {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs/sha256")
            .join(parse_digest(digest)?.hex()))
    }

    /// Reads a small JSON blob, checking its digest.
    fn read_json_blob<T: for<'de> Deserialize<'de>>(&self, digest: &str) -> Result<T> {
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).ctx("reading", &path)?;
        let actual = zlayer_image::Digest::of_bytes(&bytes).to_string();
        if actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.into(),
                actual,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Metadata {
            what: format!("{} ({digest})", path.display()),
            reason: e.to_string(),
        })
    }

    /// Resolves `tag` (or the only image when `None`) to the Windows/amd64 manifest's config and
    /// layers, following an image index if there is one.
    pub fn resolve(
        &self,
        tag: Option<&str>,
    ) -> Result<(WindowsImage, Vec<ResolvedLayerDescriptor>)> {
        let index_path = self.root.join("index.json");
        let bytes = std::fs::read(&index_path).ctx("reading", &index_path)?;
        let index: IndexDoc = serde_json::from_slice(&bytes).map_err(|e| Error::Metadata {
            what: index_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let reference = format!(
            "oci:{}{}",
            self.root.display(),
            tag.map(|t| format!(":{t}")).unwrap_or_default()
        );
        let mut chosen = match tag {
            Some(t) => index
                .manifests
                .into_iter()
                .find(|d| {
                    d.annotations
                        .get("org.opencontainers.image.ref.name")
                        .map(String::as_str)
                        == Some(t)
                })
                .ok_or_else(|| Error::Metadata {
                    what: index_path.display().to_string(),
                    reason: format!("no manifest tagged {t:?}"),
                })?,
            None => {
                let mut all = index.manifests;
                if all.len() != 1 {
                    return Err(Error::Metadata {
                        what: index_path.display().to_string(),
                        reason: format!("{} manifests; name one with oci:DIR:TAG", all.len()),
                    });
                }
                all.remove(0)
            }
        };
        // Follow nested indexes to the windows/amd64 entry.
        for _ in 0..4 {
            if !INDEX_TYPES.contains(&chosen.media_type.as_str()) {
                break;
            }
            let nested: IndexDoc = self.read_json_blob(&chosen.digest)?;
            chosen = nested
                .manifests
                .into_iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "windows" && p.architecture == "amd64")
                })
                .ok_or_else(|| Error::Metadata {
                    what: format!("image index {}", chosen.digest),
                    reason: "no windows/amd64 manifest".into(),
                })?;
        }
        let manifest: ManifestDoc = self.read_json_blob(&chosen.digest)?;
        let layers = manifest
            .layers
            .into_iter()
            .map(|d| ResolvedLayerDescriptor {
                digest: d.digest,
                media_type: d.media_type,
                size: d.size,
                urls: d.urls,
            })
            .collect();
        Ok((
            WindowsImage {
                reference,
                config: ConfigDescriptor {
                    digest: manifest.config.digest,
                    size: manifest.config.size,
                },
            },
            layers,
        ))
    }
}

impl LayerSource for OciLayoutSource {
    fn fetch_blob(
        &self,
        _image: &str,
        _auth: &RegistryAuth,
        digest: &str,
        _size: u64,
    ) -> Result<BlobFetch> {
        let path = self.blob_path(digest)?;
        match File::open(&path) {
            Ok(f) => Ok(BlobFetch::Found(Box::new(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BlobFetch::NotFound),
            Err(e) => Err(Error::io("opening blob", path, e)),
        }
    }
}

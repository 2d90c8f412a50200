//! The manifest documents a registry serves: OCI and Docker schema 2 image manifests, OCI image
//! indexes and Docker manifest lists. Our own small serde types (rather than oci-client's) so
//! digests are checked [`Digest`]s and sizes are unsigned from the moment they are parsed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::platform::Platform;
use crate::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every manifest type we can pull, in the order we prefer them (sent as `Accept`).
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// A content descriptor: what a manifest says about one blob. The one descriptor type of the
/// crate: the registry client, the pull and the local image store all use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Empty when a (locally loaded) manifest omits it; layers are checked by the store.
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Alternative download locations (foreign / non-distributable layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI `image.manifest.v1` or Docker `distribution.manifest.v2`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One entry of an image index / manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An OCI image index or Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<IndexEntry>,
}

/// A parsed manifest document.
#[derive(Clone, Debug)]
pub enum ManifestDocument {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Why a manifest body is not one we can use.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a JSON manifest: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("unsupported schemaVersion {0:?} (only 2 is supported; Docker schema 1 is obsolete)")]
    SchemaVersion(Option<u32>),
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("invalid image index: {0}")]
    BadIndex(#[source] serde_json::Error),
    #[error("invalid image manifest: {0}")]
    BadManifest(#[source] serde_json::Error),
    #[error("invalid image manifest: descriptor {0} has no mediaType")]
    NoMediaType(Digest),
}

/// Parses a manifest body. The kind comes from the `mediaType` field (or, for documents that
/// omit it, from the response's `Content-Type`, then from the shape of the JSON).
pub fn parse_manifest(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<ManifestDocument, ManifestError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(ManifestError::NotJson)?;
    if probe.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion(probe.schema_version));
    }
    let kind = probe
        .media_type
        .as_deref()
        .or(content_type.filter(|c| ACCEPTED_MANIFEST_TYPES.contains(c)));
    let is_index = match kind {
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => return Err(ManifestError::MediaType(other.to_string())),
        None => probe.manifests.is_some(),
    };
    if is_index {
        serde_json::from_slice(body)
            .map(ManifestDocument::Index)
            .map_err(ManifestError::BadIndex)
    } else {
        let m: ImageManifest = serde_json::from_slice(body).map_err(ManifestError::BadManifest)?;
        // A registry's manifest names every blob's media type (the descriptor type tolerates
        // its absence only for locally loaded images).
        if let Some(d) = std::iter::once(&m.config)
            .chain(&m.layers)
            .find(|d| d.media_type.is_empty())
        {
            return Err(ManifestError::NoMediaType(d.digest.clone()));
        }
        Ok(ManifestDocument::Image(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":7}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":9,"urls":["https://x/y"]}}]}}"#,
            d('a'),
            d('b')
        );
        let ManifestDocument::Image(m) = parse_manifest(body.as_bytes(), None).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(m.layers[0].size, 9);
        assert_eq!(m.layers[0].urls, vec!["https://x/y".to_string()]);
        // No mediaType field: decided by shape.
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            d('c')
        );
        let ManifestDocument::Index(i) = parse_manifest(body.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(
            i.manifests[0].platform.as_ref().unwrap().to_string(),
            "linux/arm/v7"
        );
    }

    #[test]
    fn rejects_bad_manifests() {
        let err = parse_manifest(br#"{"schemaVersion":1}"#, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("schemaVersion"), "{err}");
        let err = parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("text/plain"), "{err}");
        let err = parse_manifest(
            br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:12","size":1},"layers":[]}"#,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid image manifest"), "{err}");
    }
}

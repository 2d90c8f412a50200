//! What the store reads and reports: the manifest it parses, and the records and reports
//! callers see (`images`, `image inspect`, `rmi`, `image prune`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Result, StoreError};
use crate::digest::Digest;
use crate::layer::Compression;
pub use crate::registry::{DOCKER_MANIFEST, OCI_MANIFEST};

use super::Descriptor;

/// An image manifest, OCI or Docker schema 2. Parsed by hand-rolled serde rather than
/// oci-spec's `ImageManifest` so Docker media types and extra fields never fail a load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    pub fn parse(bytes: &[u8], digest: &Digest) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|source| StoreError::BadJson {
            what: "manifest",
            digest: digest.clone(),
            source,
        })?;
        if m.schema_version != 2 {
            return Err(StoreError::BadImage {
                what: "manifest",
                digest: digest.clone(),
                detail: format!("unsupported schemaVersion {}", m.schema_version),
            });
        }
        for l in &m.layers {
            Compression::from_media_type(&l.media_type)?;
        }
        Ok(m)
    }
}

/// One line of `images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageSummary {
    /// Normalised names (`docker.io/library/busybox:latest`); empty for a dangling image.
    pub names: Vec<String>,
    /// The docker-style image id: the config digest.
    pub id: Digest,
    pub manifest_digest: Digest,
    /// From the image config (RFC 3339), when it says.
    pub created: Option<String>,
    /// Bytes of content: config plus compressed layers.
    pub size: u64,
}

/// An image as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub names: Vec<String>,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl ImageRecord {
    /// How to show the image: its first name, else its short id.
    pub fn display_name(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.config_digest.short().to_string())
    }
}

/// One layer in `image inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerDetails {
    pub digest: Digest,
    pub media_type: String,
    /// Compressed size, from the manifest.
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
    /// The snapshot id when unpacked.
    pub snapshot: Option<u64>,
    /// Bytes of file data when unpacked.
    pub unpacked_size: Option<u64>,
}

/// `image inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageDetails {
    pub id: Digest,
    pub manifest_digest: Digest,
    pub names: Vec<String>,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    pub layers: Vec<LayerDetails>,
    /// Config plus compressed layers.
    pub size: u64,
}

/// What `remove` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoveReport {
    pub untagged: Vec<String>,
    /// The image (manifest digest) whose record was deleted, when no names were left.
    pub deleted: Option<Digest>,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PruneReport {
    /// Dangling images (no names, not in use) whose records were deleted.
    pub images_removed: Vec<Digest>,
    pub blobs_removed: Vec<Digest>,
    pub snapshots_removed: Vec<u64>,
    pub bytes_freed: u64,
}

//! The local image store: content store + snapshots + the image index (names → manifests).
//!
//! An image is identified by its manifest digest; its docker-style id is the config digest.
//! Names are normalised references (`docker.io/library/busybox:latest`, or `repo@sha256:…`).
//! `record_image` expects the manifest and config blobs (and, to unpack, the layer blobs) to be
//! in the content store already: the puller and the loader write them first.
//!
//! Garbage collection is mark-and-sweep from the image records. A pull or load in progress
//! holds a [`Lease`] (a shared `flock` on `root/gc.lock`); `prune` takes the lock exclusively,
//! so it never sweeps blobs or snapshots a running pull has written but not yet recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::content::{ContentError, ContentStore};
use crate::db::{Db, DbError};
use crate::digest::Digest;
use crate::layer::{self, Compression, DiffIdReader, LayerError};
use crate::reference::{Reference, ReferenceError};
use crate::snapshot::{chain_ids, Snapshot, SnapshotError, SnapshotStore};
use crate::unpack::chain::{ChainError, ChainLayer, ChainUnpacker};
use crate::unpack::{self, ApplyOptions, UnpackError};

pub use oci_spec::image::ImageConfiguration;

#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("layer {layer}: {source}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("{query:?} is ambiguous: it matches images {matches}")]
    Ambiguous { query: String, matches: String },
    #[error("image {image} is in use; stop and remove the containers using it first")]
    InUse { image: String },
    #[error("{what} {digest}: invalid JSON: {source}")]
    BadJson {
        what: &'static str,
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {digest}: {detail}")]
    BadImage {
        what: &'static str,
        digest: Digest,
        detail: String,
    },
    #[error(
        "layer {layer}: DiffID mismatch: config says {expected}, uncompressed content is {actual}"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error(
        "image {image}: layer {layer} is not unpacked (chain {chain_id}); unpack the image first"
    )]
    NotUnpacked {
        image: String,
        layer: Digest,
        chain_id: Digest,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<ChainError> for StoreError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::DiffIdMismatch {
                layer,
                expected,
                actual,
            } => StoreError::DiffIdMismatch {
                layer,
                expected,
                actual,
            },
            ChainError::Content { source, .. } => StoreError::Content(source),
            ChainError::MediaType { source, .. } => StoreError::Layer(source),
            ChainError::Apply { layer, source } => StoreError::Unpack { layer, source },
            ChainError::Read { layer, source } => StoreError::Unpack {
                layer,
                source: UnpackError::Tar(source),
            },
            ChainError::ParentFailed { layer } => StoreError::BadImage {
                what: "layer",
                digest: layer,
                detail: "not unpacked because a layer below it failed".to_string(),
            },
            ChainError::Snapshot { source, .. } => StoreError::Snapshot(source),
        }
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A content descriptor as found in manifests (OCI and Docker schema 2 share this shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

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

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

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

/// Protection from `prune` while held: take one for the duration of a pull or load.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

/// Content store, snapshots and image index under one root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    db: Db,
}

type ImageRow = (
    String,
    String,
    String,
    u64,
    Option<String>,
    String,
    String,
    Option<String>,
);

impl ImageStore {
    /// Opens (creating) the store under `root` (`content/`, `snapshots/`, `agent.db`).
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(io_err("create directory", root))?;
        let content = ContentStore::open(root)?;
        let db = Db::open(root)?;
        let snapshots = SnapshotStore::with_db(root, db.clone())?;
        Ok(Self {
            root: root.to_path_buf(),
            content,
            snapshots,
            db,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Takes a GC lease: `prune` waits until every lease is dropped.
    pub fn lease(&self) -> Result<Lease> {
        let path = self.root.join("gc.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        crate::content::flock(&file, libc::LOCK_SH).map_err(io_err("lock", &path))?;
        Ok(Lease { _file: file })
    }

    /// Reads and parses a manifest from the content store.
    pub fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        Manifest::parse(&self.content.read_blob(digest)?, digest)
    }

    fn read_config(&self, digest: &Digest) -> Result<ImageConfiguration> {
        let bytes = self.content.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            what: "image config",
            digest: digest.clone(),
            source,
        })
    }

    /// The config's `rootfs.diff_ids`, parsed, checked against the manifest's layer count.
    fn diff_ids(
        &self,
        config: &ImageConfiguration,
        manifest: &Manifest,
        config_digest: &Digest,
    ) -> Result<Vec<Digest>> {
        let ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|s| {
                Digest::parse(s).map_err(|e| StoreError::BadImage {
                    what: "image config",
                    digest: config_digest.clone(),
                    detail: format!("rootfs.diff_ids: {e}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if ids.len() != manifest.layers.len() {
            return Err(StoreError::BadImage {
                what: "image config",
                digest: config_digest.clone(),
                detail: format!(
                    "rootfs.diff_ids lists {} layers but the manifest has {}",
                    ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        Ok(ids)
    }

    /// Records (or re-tags) an image whose manifest and config are in the content store, and
    /// points `name` at it. Returns the record.
    pub fn record_image(
        &self,
        name: &Reference,
        manifest_digest: &Digest,
        config_digest: &Digest,
    ) -> Result<ImageRecord> {
        self.record_image_names(std::slice::from_ref(name), manifest_digest, config_digest)
    }

    /// Like [`record_image`](Self::record_image) with any number of names (none: dangling).
    pub fn record_image_names(
        &self,
        names: &[Reference],
        manifest_digest: &Digest,
        config_digest: &Digest,
    ) -> Result<ImageRecord> {
        let manifest = self.manifest(manifest_digest)?;
        if &manifest.config.digest != config_digest {
            return Err(StoreError::BadImage {
                what: "manifest",
                digest: manifest_digest.clone(),
                detail: format!(
                    "its config is {}, not {config_digest}",
                    manifest.config.digest
                ),
            });
        }
        let config = self.read_config(config_digest)?;
        self.diff_ids(&config, &manifest, config_digest)?;
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        tx.execute(
            "INSERT INTO images (manifest_digest, config_digest, media_type, size, created, os, architecture, variant, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(manifest_digest) DO UPDATE SET recorded_at = excluded.recorded_at",
            params![
                manifest_digest.to_string(),
                config_digest.to_string(),
                media_type,
                size,
                config.created().clone(),
                config.os().to_string(),
                config.architecture().to_string(),
                config.variant().clone(),
                chrono::Utc::now().to_rfc3339(),
            ],
        )
        .map_err(|e| self.db.err(e))?;
        let mut displaced = Vec::new();
        for name in names {
            for key in name_keys(name) {
                let old: Option<String> = tx
                    .query_row(
                        "SELECT manifest_digest FROM image_names WHERE name = ?1",
                        [&key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.db.err(e))?;
                if let Some(old) = old.filter(|o| o != &manifest_digest.to_string()) {
                    displaced.push(old);
                }
                tx.execute(
                    "INSERT INTO image_names (name, manifest_digest) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET manifest_digest = excluded.manifest_digest",
                    params![key, manifest_digest.to_string()],
                )
                .map_err(|e| self.db.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        drop(conn);
        if !displaced.is_empty() {
            tracing::info!(?displaced, "re-tagged: previous images may now be dangling");
        }
        self.record_by_manifest(manifest_digest)?
            .ok_or_else(|| StoreError::NotFound(manifest_digest.to_string()))
    }

    fn rows(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<ImageRow>> {
        let conn = self.db.lock();
        let mut st = conn.prepare(sql).map_err(|e| self.db.err(e))?;
        let rows = st
            .query_map(args, |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            })
            .map_err(|e| self.db.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db.err(e))?;
        Ok(rows)
    }

    fn names_of(&self, manifest_digest: &str) -> Result<Vec<String>> {
        let conn = self.db.lock();
        let mut st = conn
            .prepare("SELECT name FROM image_names WHERE manifest_digest = ?1 ORDER BY name")
            .map_err(|e| self.db.err(e))?;
        let names = st
            .query_map([manifest_digest], |r| r.get(0))
            .map_err(|e| self.db.err(e))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.db.err(e))?;
        Ok(names)
    }

    fn to_record(&self, row: ImageRow) -> Result<ImageRecord> {
        let (manifest, config, media_type, size, created, os, architecture, variant) = row;
        let parse = |s: &str| {
            Digest::parse(s).map_err(|e| StoreError::BadImage {
                what: "image record",
                digest: Digest::of_bytes(s.as_bytes()),
                detail: e.to_string(),
            })
        };
        Ok(ImageRecord {
            names: self.names_of(&manifest)?,
            manifest_digest: parse(&manifest)?,
            config_digest: parse(&config)?,
            media_type,
            size,
            created,
            os,
            architecture,
            variant,
        })
    }

    const SELECT: &'static str = "SELECT manifest_digest, config_digest, media_type, size, created, os, architecture, variant FROM images";

    fn record_by_manifest(&self, digest: &Digest) -> Result<Option<ImageRecord>> {
        let sql = format!("{} WHERE manifest_digest = ?1", Self::SELECT);
        let d = digest.to_string();
        let rows = self.rows(&sql, &[&d])?;
        rows.into_iter()
            .next()
            .map(|r| self.to_record(r))
            .transpose()
    }

    /// Every image record, newest first.
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let sql = format!("{} ORDER BY recorded_at DESC", Self::SELECT);
        self.rows(&sql, &[])?
            .into_iter()
            .map(|r| self.to_record(r))
            .collect()
    }

    /// `images`.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| ImageSummary {
                names: r.names,
                id: r.config_digest,
                manifest_digest: r.manifest_digest,
                created: r.created,
                size: r.size,
            })
            .collect())
    }

    /// Finds an image by name (normalised like docker: `busybox` is
    /// `docker.io/library/busybox:latest`), by `name@digest`, by full manifest or config digest,
    /// or by a prefix of its id (config digest hex) as docker accepts.
    pub fn resolve(&self, query: &str) -> Result<ImageRecord> {
        let q = query.trim();
        if let Ok(d) = Digest::parse(q) {
            let sql = format!(
                "{} WHERE manifest_digest = ?1 OR config_digest = ?1",
                Self::SELECT
            );
            let ds = d.to_string();
            if let Some(r) = self.rows(&sql, &[&ds])?.into_iter().next() {
                return self.to_record(r);
            }
            return Err(StoreError::NotFound(query.to_string()));
        }
        let parsed = Reference::parse(q);
        if let Ok(r) = &parsed {
            // With a digest the tag is only decoration (as in docker): never resolve by it.
            let keys = match r.digest() {
                Some(_) => name_keys(r).into_iter().take(1).collect(),
                None => name_keys(r),
            };
            for key in keys {
                let found: Option<String> = {
                    let conn = self.db.lock();
                    conn.query_row(
                        "SELECT manifest_digest FROM image_names WHERE name = ?1",
                        [&key],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(|e| self.db.err(e))?
                };
                if let Some(m) = found {
                    let d = Digest::parse(&m).map_err(|e| StoreError::BadImage {
                        what: "image name",
                        digest: Digest::of_bytes(key.as_bytes()),
                        detail: e.to_string(),
                    })?;
                    if let Some(rec) = self.record_by_manifest(&d)? {
                        return Ok(rec);
                    }
                }
            }
            if let Some(d) = r.digest() {
                if let Some(rec) = self.record_by_manifest(d)? {
                    return Ok(rec);
                }
                return Err(StoreError::NotFound(query.to_string()));
            }
        }
        let hex = q.strip_prefix("sha256:").unwrap_or(q);
        let is_prefix = !hex.is_empty()
            && hex.len() <= 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if is_prefix {
            let pattern = format!("sha256:{hex}%");
            let sql = format!(
                "{} WHERE config_digest LIKE ?1 OR manifest_digest LIKE ?1",
                Self::SELECT
            );
            let rows = self.rows(&sql, &[&pattern])?;
            let mut ids: Vec<&String> = rows.iter().map(|r| &r.1).collect();
            ids.sort();
            ids.dedup();
            match ids.len() {
                0 => {}
                1 => {
                    let row = rows.into_iter().next().expect("one id, at least one row");
                    return self.to_record(row);
                }
                _ => {
                    return Err(StoreError::Ambiguous {
                        query: query.to_string(),
                        matches: ids
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        match parsed {
            Err(e) if !is_prefix => Err(e.into()),
            _ => Err(StoreError::NotFound(query.to_string())),
        }
    }

    /// The image config (the runtime builds config.json from it).
    pub fn config(&self, query: &str) -> Result<ImageConfiguration> {
        let rec = self.resolve(query)?;
        self.read_config(&rec.config_digest)
    }

    /// `image inspect`.
    pub fn inspect(&self, query: &str) -> Result<ImageDetails> {
        let rec = self.resolve(query)?;
        let manifest = self.manifest(&rec.manifest_digest)?;
        let config = self.read_config(&rec.config_digest)?;
        let diff_ids = self.diff_ids(&config, &manifest, &rec.config_digest)?;
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        for ((desc, diff_id), chain_id) in manifest.layers.iter().zip(diff_ids).zip(chains) {
            let snap = self.snapshots.get(&chain_id)?;
            layers.push(LayerDetails {
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
                diff_id,
                chain_id,
                snapshot: snap.as_ref().map(|s| s.id),
                unpacked_size: snap.as_ref().map(|s| s.size),
            });
        }
        let c = config.config().clone().unwrap_or_default();
        let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
        exposed_ports.sort();
        Ok(ImageDetails {
            id: rec.config_digest.clone(),
            manifest_digest: rec.manifest_digest.clone(),
            names: rec.names.clone(),
            created: rec.created.clone(),
            os: rec.os.clone(),
            architecture: rec.architecture.clone(),
            variant: rec.variant.clone(),
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            exposed_ports,
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            stop_signal: c.stop_signal().clone(),
            layers,
            size: rec.size,
        })
    }

    /// The chain of (layer descriptor, diff id, chain id) of an image.
    fn layer_chain(&self, rec: &ImageRecord) -> Result<Vec<(Descriptor, Digest, Digest)>> {
        let manifest = self.manifest(&rec.manifest_digest)?;
        let config = self.read_config(&rec.config_digest)?;
        let diff_ids = self.diff_ids(&config, &manifest, &rec.config_digest)?;
        let chains = chain_ids(&diff_ids);
        Ok(manifest
            .layers
            .into_iter()
            .zip(diff_ids)
            .zip(chains)
            .map(|((l, d), c)| (l, d, c))
            .collect())
    }

    /// The snapshot fs directories of an image, base layer first (overlay lowerdir wants them
    /// top first: reverse). Fails naming the first layer that is not unpacked.
    pub fn rootfs_layers(&self, query: &str) -> Result<Vec<PathBuf>> {
        Ok(self
            .rootfs_snapshots(query)?
            .into_iter()
            .map(|s| s.path)
            .collect())
    }

    /// Like [`rootfs_layers`](Self::rootfs_layers) with the whole snapshots: their ids are
    /// what a container should remember and pass to [`prune`](Self::prune) as in use.
    pub fn rootfs_snapshots(&self, query: &str) -> Result<Vec<Snapshot>> {
        let rec = self.resolve(query)?;
        let mut out = Vec::new();
        for (desc, _, chain_id) in self.layer_chain(&rec)? {
            match self.snapshots.get(&chain_id)? {
                Some(s) => out.push(s),
                None => {
                    return Err(StoreError::NotUnpacked {
                        image: rec.display_name(),
                        layer: desc.digest,
                        chain_id,
                    })
                }
            }
        }
        Ok(out)
    }

    /// Makes sure every layer of a stored image is unpacked into a snapshot (unpacking the
    /// missing ones from the content store); returns the snapshots, base first.
    ///
    /// Missing layers are unpacked in parallel by the [`ChainUnpacker`] (the pull's too):
    /// each is applied without its lowers, then finished and committed in chain order.
    pub fn unpack_layers(&self, query: &str) -> Result<Vec<Snapshot>> {
        let _lease = self.lease()?;
        let rec = self.resolve(query)?;
        let chain = self.layer_chain(&rec)?;
        let mut existing = Vec::with_capacity(chain.len());
        for (_, _, c) in &chain {
            existing.push(self.snapshots.get(c)?);
        }
        if existing.iter().all(Option::is_some) {
            return Ok(existing.into_iter().flatten().collect());
        }
        let (blobs, (diff_ids, chain_ids)): (Vec<_>, (Vec<_>, Vec<_>)) =
            chain.into_iter().map(|(l, d, c)| (l, (d, c))).unzip();
        let layers = ChainLayer::chain(
            blobs.iter().map(|l| (&l.digest, l.media_type.as_str())),
            &diff_ids,
            &chain_ids,
        );
        // The unpacker waits for extraction permits through a runtime: the caller's when
        // there is one, else a small one of our own for the duration.
        let own_runtime;
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) => {
                own_runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .map_err(io_err("start runtime for", self.snapshots.dir()))?;
                own_runtime.handle().clone()
            }
        };
        let unpacker = ChainUnpacker::new(
            self.content.clone(),
            self.snapshots.clone(),
            ApplyOptions::default(),
            runtime,
        );
        Ok(unpacker.unpack_all(&layers)?)
    }

    /// Removes a name (`rmi`); the image record goes when its last name does, unless
    /// `in_use(&record)` says a container uses it. By id or digest, all names go at once.
    /// Blobs and snapshots are reclaimed by [`prune`](Self::prune).
    pub fn remove(
        &self,
        query: &str,
        in_use: impl Fn(&ImageRecord) -> bool,
    ) -> Result<RemoveReport> {
        let rec = self.resolve(query)?;
        let by_name: Option<Vec<String>> = Reference::parse(query.trim())
            .ok()
            .map(|r| name_keys(&r))
            .filter(|keys| keys.iter().any(|k| rec.names.contains(k)));
        let untag: Vec<String> = match &by_name {
            Some(keys) => keys
                .iter()
                .filter(|k| rec.names.contains(k))
                .cloned()
                .collect(),
            None => rec.names.clone(),
        };
        let last = untag.len() == rec.names.len();
        if last && in_use(&rec) {
            return Err(StoreError::InUse {
                image: rec.display_name(),
            });
        }
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        for n in &untag {
            tx.execute("DELETE FROM image_names WHERE name = ?1", [n])
                .map_err(|e| self.db.err(e))?;
        }
        let mut report = RemoveReport {
            untagged: untag,
            deleted: None,
        };
        if last {
            tx.execute(
                "DELETE FROM images WHERE manifest_digest = ?1",
                [rec.manifest_digest.to_string()],
            )
            .map_err(|e| self.db.err(e))?;
            report.deleted = Some(rec.manifest_digest.clone());
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        Ok(report)
    }

    /// Garbage collection: deletes dangling image records (no names) whose snapshots are not in
    /// use, then every blob and snapshot no image references. Snapshots in `in_use_snapshots`
    /// (and their ancestors) are never removed. Waits for running pulls/loads (leases).
    pub fn prune(&self, in_use_snapshots: &HashSet<u64>) -> Result<PruneReport> {
        let path = self.root.join("gc.lock");
        let gc = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        crate::content::flock(&gc, libc::LOCK_EX).map_err(io_err("lock", &path))?;
        let mut report = PruneReport::default();

        // Keep set of snapshots: in use, plus their ancestors.
        let all_snaps = self.snapshots.list()?;
        let by_chain: HashMap<Digest, &Snapshot> =
            all_snaps.iter().map(|s| (s.chain_id.clone(), s)).collect();
        let mut keep_snaps: HashSet<u64> = HashSet::new();
        for s in all_snaps
            .iter()
            .filter(|s| in_use_snapshots.contains(&s.id))
        {
            let mut cur: Option<&Snapshot> = Some(s);
            while let Some(c) = cur {
                if !keep_snaps.insert(c.id) {
                    break;
                }
                cur = c.parent.as_ref().and_then(|p| by_chain.get(p).copied());
            }
        }

        // Dangling images go unless one of their snapshots is in use.
        for rec in self.records()? {
            if !rec.names.is_empty() {
                continue;
            }
            let chain = self.layer_chain(&rec).unwrap_or_default();
            let used = chain
                .iter()
                .any(|(_, _, c)| by_chain.get(c).is_some_and(|s| keep_snaps.contains(&s.id)));
            if used {
                continue;
            }
            let conn = self.db.lock();
            conn.execute(
                "DELETE FROM images WHERE manifest_digest = ?1",
                [rec.manifest_digest.to_string()],
            )
            .map_err(|e| self.db.err(e))?;
            report.images_removed.push(rec.manifest_digest);
        }

        // Mark.
        let mut keep_blobs: HashSet<Digest> = HashSet::new();
        let mut keep_chains: HashSet<Digest> = HashSet::new();
        for rec in self.records()? {
            keep_blobs.insert(rec.manifest_digest.clone());
            keep_blobs.insert(rec.config_digest.clone());
            match self.layer_chain(&rec) {
                Ok(chain) => {
                    for (l, _, c) in chain {
                        keep_blobs.insert(l.digest);
                        keep_chains.insert(c);
                    }
                }
                Err(e) => {
                    // Unreadable manifest/config: keep every snapshot rather than guess.
                    tracing::warn!(image = %rec.display_name(), error = %e, "cannot read image; its layers are kept");
                    keep_chains.extend(all_snaps.iter().map(|s| s.chain_id.clone()));
                }
            }
        }
        // Sweep.
        for s in &all_snaps {
            if keep_chains.contains(&s.chain_id) || keep_snaps.contains(&s.id) {
                continue;
            }
            let size = s.size;
            if self.snapshots.remove(&s.chain_id)? {
                report.snapshots_removed.push(s.id);
                report.bytes_freed += size;
            }
        }
        for d in self.content.list()? {
            if keep_blobs.contains(&d) {
                continue;
            }
            let size = self.content.size(&d).unwrap_or(0);
            self.content.delete(&d)?;
            report.blobs_removed.push(d);
            report.bytes_freed += size;
        }
        report.bytes_freed += self.content.clean_ingest()?;
        self.snapshots.clean_locks()?;
        Ok(report)
    }
}

/// The index keys of a reference: its tag form and/or its digest form.
/// The digest form comes first: for `repo:tag@digest` the digest decides, as docker does.
fn name_keys(r: &Reference) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(d) = r.digest() {
        keys.push(format!("{}@{d}", r.name()));
    }
    if let Some(t) = r.tag() {
        keys.push(format!("{}:{t}", r.name()));
    }
    keys
}

/// Decompresses `blob`, applies it to `dir`, and checks the uncompressed stream's digest
/// against `diff_id`. Returns the apply statistics and the uncompressed length.
pub fn apply_blob(
    blob: impl Read + Send + 'static,
    compression: Compression,
    layer: &Digest,
    diff_id: &Digest,
    dir: &Path,
    opts: &ApplyOptions,
) -> Result<(unpack::ApplyStats, u64)> {
    let stream = layer::decompress(blob, compression).map_err(|source| StoreError::Unpack {
        layer: layer.clone(),
        source: UnpackError::Tar(source),
    })?;
    let mut hashing = DiffIdReader::new(stream);
    let stats =
        unpack::apply_layer(dir, &mut hashing, opts).map_err(|source| StoreError::Unpack {
            layer: layer.clone(),
            source,
        })?;
    let (actual, len) = hashing
        .finish_with_len()
        .map_err(|source| StoreError::Unpack {
            layer: layer.clone(),
            source: UnpackError::Tar(source),
        })?;
    if &actual != diff_id {
        return Err(StoreError::DiffIdMismatch {
            layer: layer.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok((stats, len))
}

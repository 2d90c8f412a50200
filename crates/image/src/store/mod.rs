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
//!
//! The parts: [`model`] (the manifest and the records and reports callers see), [`index`]
//! (names → images in the database: record, resolve, list, remove), [`gc`] (leases and
//! `prune`); this file opens the store and reads images (config, inspect, layers, unpack).

mod gc;
mod index;
mod model;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::content::{ContentError, ContentStore};
use crate::db::{Db, DbError};
use crate::digest::Digest;
use crate::layer::{self, Compression, DiffIdReader, LayerError};
use crate::reference::ReferenceError;
use crate::snapshot::{chain_ids, Snapshot, SnapshotError, SnapshotStore};
use crate::unpack::chain::{ChainError, ChainLayer, ChainUnpacker};
use crate::unpack::{self, ApplyOptions, UnpackError};

pub use crate::registry::Descriptor;
pub use gc::Lease;
pub use model::{
    ImageDetails, ImageRecord, ImageSummary, LayerDetails, Manifest, PruneReport, RemoveReport,
    DOCKER_MANIFEST, OCI_MANIFEST,
};
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

/// Content store, snapshots and image index under one root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    db: Db,
}

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

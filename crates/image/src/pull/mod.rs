//! The pull pipeline: resolve a reference, download blobs into the content store (several at
//! once, resuming interrupted ones), and unpack each layer into its snapshot while later layers
//! are still downloading.
//!
//! Why this shape:
//! - Every blob goes through [`ContentStore::ingest`], which hashes while writing and only
//!   renames into `blobs/` after size and sha256 match, so a crash (even SIGKILL) never leaves a
//!   partial blob visible as complete, and the partial data stays in `ingest/` to be resumed
//!   with an HTTP Range request.
//! - Bytes flow from the socket to the file through a small bounded channel: a layer is never
//!   held in memory.
//! - Layers must be applied in chain order (an overlay snapshot needs its lower layers for
//!   hardlink copy-ups and implicit parent directories), so parallelism comes from elsewhere:
//!   downloads overlap unpacking, and the shared chain unpacker ([`crate::unpack::chain`])
//!   extracts several layers at once, each inflating on one thread and hashing + extracting
//!   on another.

mod download;
mod events;

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use events::{render_progress, DownloadedBytes, LayerInfo, ProgressRenderer, PullEvent};

use crate::content::ContentError;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{Descriptor, Platform, RegistryClient, RegistryError, ResolvedImage};
use crate::snapshot::{chain_ids, Snapshot, SnapshotError};
use crate::store::{ImageRecord, ImageStore, StoreError};
use crate::unpack::chain::{ChainError, ChainLayer, ChainLink, ChainUnpacker};
use crate::unpack::ApplyOptions;

/// Default of [`PullOptions::min_free_bytes`]: 256 MiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

/// Knobs of one pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Blobs downloaded at once; `None` takes the client's `max_concurrent_downloads`.
    pub max_concurrent_downloads: Option<usize>,
    /// How layers are applied (limits, ownership, fsync). `whiteouts`, `lower_dirs` and
    /// `space` are set by the pull itself.
    pub apply: ApplyOptions,
    /// Unpacking stops, naming image, layer and sizes, rather than leave less than this free
    /// on the store's filesystem (0: no floor).
    pub min_free_bytes: u64,
    /// Cap on the image's unpacked size, all layers together (layers already on the node
    /// count too).
    pub max_unpacked_bytes: Option<u64>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: None,
            apply: ApplyOptions::default(),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            max_unpacked_bytes: None,
        }
    }
}

/// One layer of a pulled image.
#[derive(Clone, Debug)]
pub struct PulledLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub snapshot: Snapshot,
}

/// The result of a pull: what the image is and where its layers are.
#[derive(Clone, Debug)]
pub struct PulledImage {
    pub reference: Reference,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// Size of the manifest document in bytes.
    pub manifest_size: u64,
    /// The index / manifest list the reference named, if any (stored in the content store too).
    pub index_digest: Option<Digest>,
    pub config: Descriptor,
    pub platform: Platform,
    pub layers: Vec<PulledLayer>,
    /// The image as recorded in the image store under the pulled name.
    pub record: ImageRecord,
}

/// Why a pull failed. Each names the image and the blob involved.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{image}: blob {digest} failed verification: expected {expected} ({expected_size} bytes), got {actual} ({actual_size} bytes); the download was deleted")]
    BlobVerification {
        image: String,
        digest: Digest,
        expected: Digest,
        expected_size: u64,
        actual: Digest,
        actual_size: u64,
    },
    #[error("{image}: layer {layer}: uncompressed content has DiffID {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        image: String,
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("{image}: blob {digest}: {source}")]
    Content {
        image: String,
        digest: Digest,
        #[source]
        source: Box<ContentError>,
    },
    #[error("{image}: config {digest}: {reason}")]
    BadConfig {
        image: String,
        digest: Digest,
        reason: String,
    },
    #[error("{image}: layer {layer}: {source}")]
    Unpack {
        image: String,
        layer: Digest,
        #[source]
        source: Box<SnapshotError>,
    },
    #[error("{image}: the layers already unpacked on this node hold {size} bytes, over the limit of {limit} bytes on an image's unpacked size (daemon setting max_image_unpacked_mib)")]
    TooLarge {
        image: String,
        size: u64,
        limit: u64,
    },
    #[error("{image}: recording the image: {source}")]
    Store {
        image: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("{image}: {what} task failed: {detail}")]
    Task {
        image: String,
        what: &'static str,
        detail: String,
    },
}

/// Shared state of one pull, handed to its tasks.
pub(crate) struct PullContext {
    pub(crate) image: String,
    pub(crate) reference: Reference,
    pub(crate) client: RegistryClient,
    pub(crate) store: ImageStore,
    pub(crate) progress: Arc<dyn Fn(PullEvent) + Send + Sync>,
}

impl PullContext {
    pub(crate) fn emit(&self, e: PullEvent) {
        (self.progress)(e)
    }

    pub(crate) fn store_error(&self, source: StoreError) -> PullError {
        PullError::Store {
            image: self.image.clone(),
            source: Box::new(source),
        }
    }

    pub(crate) fn task_error(&self, what: &'static str, e: tokio::task::JoinError) -> PullError {
        PullError::Task {
            image: self.image.clone(),
            what,
            detail: e.to_string(),
        }
    }
}

/// The parts of an image config a pull needs.
#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Rootfs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<Digest>,
}

/// Pulls `reference` for `platform` into `store`, reporting progress through `progress`:
/// downloads and verifies every blob, unpacks every layer into its snapshot, then records the
/// image under `reference`'s name. Holds a GC lease for the whole pull so a concurrent
/// `prune` cannot remove what it just downloaded.
pub async fn pull(
    store: &ImageStore,
    client: &RegistryClient,
    reference: &Reference,
    platform: &Platform,
    opts: &PullOptions,
    progress: impl Fn(PullEvent) + Send + Sync + 'static,
) -> Result<PulledImage, PullError> {
    let ctx = Arc::new(PullContext {
        image: reference.to_string(),
        reference: reference.clone(),
        client: client.clone(),
        store: store.clone(),
        progress: Arc::new(progress),
    });
    let _lease = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.lease())
            .await
            .map_err(|e| ctx.task_error("take GC lease", e))?
            .map_err(|e| ctx.store_error(e))?
    };
    ctx.emit(PullEvent::Resolving {
        reference: ctx.image.clone(),
    });
    let resolved = client.resolve(reference, platform).await?;
    ctx.emit(PullEvent::Resolved {
        reference: ctx.image.clone(),
        digest: resolved.manifest_digest.clone(),
        platform: resolved.platform.as_ref().map(|p| p.to_string()),
        layers: resolved
            .layers
            .iter()
            .map(|l| LayerInfo {
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect(),
    });

    // Documents first: the index and manifest as served, then the config.
    let mut index_digest = None;
    if let Some((digest, bytes)) = &resolved.index {
        store_document(&ctx, digest, bytes).await?;
        index_digest = Some(digest.clone());
    }
    store_document(&ctx, &resolved.manifest_digest, &resolved.manifest_bytes).await?;
    download::download_blob(&ctx, &resolved.config, false).await?;
    let config = read_config(&ctx, &resolved).await?;
    let image_platform = match (&config.os, &config.architecture) {
        (Some(os), Some(arch)) => Platform {
            os: os.clone(),
            architecture: arch.clone(),
            variant: config.variant.clone(),
        },
        _ => resolved
            .platform
            .clone()
            .unwrap_or_else(|| platform.clone()),
    };
    let diff_ids = &config.rootfs.diff_ids;
    let chains = chain_ids(diff_ids);

    // Which layers are already unpacked? Those need neither download nor unpack.
    let existing = existing_snapshots(&ctx, &chains, &resolved.manifest_digest).await?;
    let mut downloads = start_downloads(&ctx, &resolved.layers, &existing, opts);
    // Unpack in chain order as each layer's blob lands, while later ones still download.
    let result = unpack_in_order(
        &ctx,
        &resolved.layers,
        diff_ids,
        &chains,
        existing,
        &mut downloads,
        opts,
    )
    .await;
    if result.is_err() {
        // Stop the remaining downloads; their partial data stays in ingest/ for a later resume.
        for h in downloads.iter().flatten() {
            h.abort();
        }
    }
    let layers = result?;

    let record = {
        let store = ctx.store.clone();
        let (r, m, c) = (
            reference.clone(),
            resolved.manifest_digest.clone(),
            resolved.config.digest.clone(),
        );
        tokio::task::spawn_blocking(move || store.record_image(&r, &m, &c))
            .await
            .map_err(|e| ctx.task_error("record image", e))?
            .map_err(|e| ctx.store_error(e))?
    };
    ctx.emit(PullEvent::Complete {
        reference: ctx.image.clone(),
        digest: resolved.manifest_digest.clone(),
    });
    Ok(PulledImage {
        reference: reference.clone(),
        manifest_digest: resolved.manifest_digest.clone(),
        manifest_media_type: resolved
            .manifest
            .media_type
            .clone()
            .unwrap_or_else(|| crate::registry::OCI_MANIFEST.to_string()),
        manifest_size: resolved.manifest_bytes.len() as u64,
        index_digest,
        config: resolved.config.clone(),
        platform: image_platform,
        layers,
        record,
    })
}

/// Reads the (downloaded) image config and checks its rootfs against the manifest.
async fn read_config(
    ctx: &Arc<PullContext>,
    resolved: &ResolvedImage,
) -> Result<ConfigRootfs, PullError> {
    let config_bytes = {
        let content = ctx.store.content().clone();
        let d = resolved.config.digest.clone();
        tokio::task::spawn_blocking(move || content.read_blob(&d))
            .await
            .map_err(|e| ctx.task_error("read config", e))?
            .map_err(|source| PullError::Content {
                image: ctx.image.clone(),
                digest: resolved.config.digest.clone(),
                source: Box::new(source),
            })?
    };
    let bad_config = |reason: String| PullError::BadConfig {
        image: ctx.image.clone(),
        digest: resolved.config.digest.clone(),
        reason,
    };
    let config: ConfigRootfs = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad_config(format!("not a valid image config: {e}")))?;
    if config.rootfs.kind != "layers" {
        return Err(bad_config(format!(
            "rootfs.type is {:?}, expected \"layers\"",
            config.rootfs.kind
        )));
    }
    if config.rootfs.diff_ids.len() != resolved.layers.len() {
        return Err(bad_config(format!(
            "rootfs.diff_ids lists {} layers but the manifest {} has {}",
            config.rootfs.diff_ids.len(),
            resolved.manifest_digest,
            resolved.layers.len()
        )));
    }
    Ok(config)
}

/// The snapshot of each chain id, when it is already unpacked.
async fn existing_snapshots(
    ctx: &Arc<PullContext>,
    chains: &[Digest],
    manifest_digest: &Digest,
) -> Result<Vec<Option<Snapshot>>, PullError> {
    let snapshots = ctx.store.snapshots().clone();
    let chains = chains.to_vec();
    tokio::task::spawn_blocking(move || {
        chains
            .iter()
            .map(|c| snapshots.get(c))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ctx.task_error("snapshot lookup", e))?
    .map_err(|source| PullError::Unpack {
        image: ctx.image.clone(),
        layer: manifest_digest.clone(),
        source: Box::new(source),
    })
}

/// Starts every needed download now; the semaphore (FIFO) keeps `n` running, in layer order.
/// None for layers already unpacked.
fn start_downloads(
    ctx: &Arc<PullContext>,
    layers: &[Descriptor],
    existing: &[Option<Snapshot>],
    opts: &PullOptions,
) -> Vec<Option<JoinHandle<Result<(), PullError>>>> {
    let n = opts
        .max_concurrent_downloads
        .unwrap_or(ctx.client.config().max_concurrent_downloads)
        .max(1);
    let permits = Arc::new(Semaphore::new(n));
    let mut downloads = Vec::with_capacity(layers.len());
    for (layer, snap) in layers.iter().zip(existing) {
        if snap.is_some() {
            ctx.emit(PullEvent::AlreadyExists {
                layer: layer.digest.clone(),
            });
            downloads.push(None);
            continue;
        }
        ctx.emit(PullEvent::Waiting {
            layer: layer.digest.clone(),
            size: layer.size,
        });
        let ctx2 = ctx.clone();
        let layer = layer.clone();
        let permits = permits.clone();
        downloads.push(Some(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| PullError::Task {
                image: ctx2.image.clone(),
                what: "download queue",
                detail: e.to_string(),
            })?;
            download::download_blob(&ctx2, &layer, true).await
        })));
    }
    downloads
}

/// Unpacks every missing layer as soon as its blob is stored, several at once, through the
/// shared [`ChainUnpacker`] (snapshots commit in chain order). Returns the layers base first.
async fn unpack_in_order(
    ctx: &Arc<PullContext>,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    chains: &[Digest],
    existing: Vec<Option<Snapshot>>,
    downloads: &mut [Option<JoinHandle<Result<(), PullError>>>],
    opts: &PullOptions,
) -> Result<Vec<PulledLayer>, PullError> {
    let space = Arc::new(crate::unpack::SpaceGuard::new(
        opts.min_free_bytes,
        opts.max_unpacked_bytes,
    ));
    if let Some(limit) = opts.max_unpacked_bytes {
        // Layers the node already has are part of the image too.
        let present: u64 = existing.iter().flatten().map(|s| s.size).sum();
        space.count_present(present);
        if present > limit {
            return Err(PullError::TooLarge {
                image: ctx.image.clone(),
                size: present,
                limit,
            });
        }
    }
    let mut apply = opts.apply.clone();
    apply.whiteouts = crate::unpack::WhiteoutMode::Overlay;
    apply.space = Some(space);
    let unpacker = ChainUnpacker::new(
        ctx.store.content().clone(),
        ctx.store.snapshots().clone(),
        apply,
        tokio::runtime::Handle::current(),
    );
    let chain = ChainLayer::chain(
        layers.iter().map(|l| (&l.digest, l.media_type.as_str())),
        diff_ids,
        chains,
    );
    let mut tasks: Vec<LayerTask> = Vec::with_capacity(layers.len());
    let links = ChainLink::chain(layers.len());
    for (i, (existing, link)) in existing.into_iter().zip(links).enumerate() {
        if let Some(s) = existing {
            link.committed();
            tasks.push(LayerTask::Ready(s));
            continue;
        }
        let download = downloads[i].take();
        let (ctx2, unpacker, layer) = (ctx.clone(), unpacker.clone(), chain[i].clone());
        tasks.push(LayerTask::Running(tokio::spawn(async move {
            if let Some(h) = download {
                // On failure `link` is dropped, and with it its sender: the child layers fail too.
                h.await.map_err(|e| ctx2.task_error("download", e))??;
            }
            ctx2.emit(PullEvent::Extracting {
                layer: layer.blob.clone(),
            });
            let image = ctx2.image.clone();
            tokio::task::spawn_blocking(move || {
                unpacker
                    .unpack(&layer, link)
                    .map_err(|e| chain_error(&image, &layer, e))
            })
            .await
            .map_err(|e| ctx2.task_error("unpack", e))?
        })));
    }
    collect_layers(ctx, layers, diff_ids, chains, tasks).await
}

/// Awaits the layer tasks in chain order; after the first failure the rest are stopped.
async fn collect_layers(
    ctx: &Arc<PullContext>,
    layers: &[Descriptor],
    diff_ids: &[Digest],
    chains: &[Digest],
    tasks: Vec<LayerTask>,
) -> Result<Vec<PulledLayer>, PullError> {
    let mut out: Vec<PulledLayer> = Vec::with_capacity(layers.len());
    let mut first_error = None;
    for (i, task) in tasks.into_iter().enumerate() {
        let snapshot = match task {
            LayerTask::Ready(s) => s,
            LayerTask::Running(h) => {
                if first_error.is_some() {
                    h.abort();
                    continue;
                }
                match h
                    .await
                    .map_err(|e| ctx.task_error("unpack", e))
                    .and_then(|r| r)
                {
                    Ok(s) => s,
                    Err(e) => {
                        first_error = Some(e);
                        continue;
                    }
                }
            }
        };
        if first_error.is_some() {
            continue;
        }
        let layer = &layers[i];
        ctx.emit(PullEvent::Done {
            layer: layer.digest.clone(),
        });
        out.push(PulledLayer {
            descriptor: layer.clone(),
            diff_id: diff_ids[i].clone(),
            chain_id: chains[i].clone(),
            snapshot,
        });
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A failed layer unpack as the pull reports it: naming the image, the layer and its chain.
fn chain_error(image: &str, layer: &ChainLayer, e: ChainError) -> PullError {
    let fill = |reason: String| PullError::Unpack {
        image: image.to_string(),
        layer: layer.blob.clone(),
        source: Box::new(SnapshotError::Fill {
            chain_id: layer.chain_id.clone(),
            source: reason.into(),
        }),
    };
    match e {
        ChainError::DiffIdMismatch {
            layer,
            expected,
            actual,
        } => PullError::DiffIdMismatch {
            image: image.to_string(),
            layer,
            expected,
            actual,
        },
        ChainError::Content { layer, source } => PullError::Content {
            image: image.to_string(),
            digest: layer,
            source: Box::new(source),
        },
        ChainError::Snapshot { layer, source } => PullError::Unpack {
            image: image.to_string(),
            layer,
            source: Box::new(source),
        },
        ChainError::MediaType { source, .. } => fill(source.to_string()),
        ChainError::Apply { source, .. } => fill(source.to_string()),
        ChainError::Read { source, .. } => fill(format!("reading layer: {source}")),
        ChainError::ParentFailed { .. } => {
            fill("not unpacked because a layer below it failed".to_string())
        }
    }
}

/// A layer that was already unpacked, or the task unpacking it.
enum LayerTask {
    Ready(Snapshot),
    Running(JoinHandle<Result<Snapshot, PullError>>),
}

/// Stores a manifest or index exactly as served (already verified against `digest`).
async fn store_document(ctx: &PullContext, digest: &Digest, bytes: &[u8]) -> Result<(), PullError> {
    let content = ctx.store.content().clone();
    let bytes = bytes.to_vec();
    let written = tokio::task::spawn_blocking(move || content.write_blob(&bytes))
        .await
        .map_err(|e| ctx.task_error("store manifest", e))?
        .map_err(|source| PullError::Content {
            image: ctx.image.clone(),
            digest: digest.clone(),
            source: Box::new(source),
        })?;
    debug_assert_eq!(&written, digest);
    Ok(())
}

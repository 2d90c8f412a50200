//! Unpacking a chain of layers into snapshots, several layers at once, committing in chain
//! order. Used by the pull (as each blob lands) and by [`ImageStore::unpack_layers`] (blobs
//! already in the content store).
//!
//! Why this shape: an overlay snapshot needs its lower layers for hardlink copy-ups and the
//! attributes of implicit parent directories, so a layer cannot simply be extracted on its own.
//! Each layer is instead applied without its lowers ([`ApplyOptions::defer_lower`]) while other
//! layers extract too; it then waits for its parent's snapshot to be committed, finishes the
//! deferred work against the lowers ([`apply_deferred`]) and commits. Extraction is bounded by
//! a semaphore that is held only while applying, never while waiting for the parent (a child
//! holding the last permit while its parent waits for one would deadlock). Each layer inflates
//! on one thread and hashes + extracts on another: the two cost about the same.
//!
//! [`ImageStore::unpack_layers`]: crate::store::ImageStore::unpack_layers

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{apply_deferred, apply_layer, ApplyOptions, ApplyStats, UnpackError};
use crate::content::{ContentError, ContentStore};
use crate::digest::Digest;
use crate::layer::{decompress, Compression, DiffIdReader, LayerError};
use crate::snapshot::{Snapshot, SnapshotError, SnapshotStore};

/// Size of the buffers handed from the inflate thread to the extract thread.
const PIPE_BUF: usize = 256 << 10;
/// Buffers in flight between the two threads (bounds memory to a few MiB).
const PIPE_DEPTH: usize = 8;

/// One layer of a chain: its blob and the snapshot it becomes.
#[derive(Clone, Debug)]
pub(crate) struct ChainLayer {
    /// The (compressed) blob in the content store.
    pub(crate) blob: Digest,
    pub(crate) media_type: String,
    /// What the uncompressed stream must hash to.
    pub(crate) diff_id: Digest,
    pub(crate) chain_id: Digest,
    /// The chain id of the layer below, None for the base layer.
    pub(crate) parent: Option<Digest>,
}

impl ChainLayer {
    /// The layers of an image, base first, from its layer blobs (digest, media type) and the
    /// matching DiffIDs and chain ids.
    pub(crate) fn chain<'a>(
        blobs: impl IntoIterator<Item = (&'a Digest, &'a str)>,
        diff_ids: &[Digest],
        chain_ids: &[Digest],
    ) -> Vec<ChainLayer> {
        blobs
            .into_iter()
            .zip(diff_ids.iter().zip(chain_ids))
            .enumerate()
            .map(
                |(i, ((blob, media_type), (diff_id, chain_id)))| ChainLayer {
                    blob: blob.clone(),
                    media_type: media_type.to_string(),
                    diff_id: diff_id.clone(),
                    chain_id: chain_id.clone(),
                    parent: i.checked_sub(1).map(|p| chain_ids[p].clone()),
                },
            )
            .collect()
    }
}

/// Why a layer of a chain was not unpacked. Each names the layer blob.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(
        "layer {layer}: DiffID mismatch: config says {expected}, uncompressed content is {actual}"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer}: {source}")]
    Content {
        layer: Digest,
        #[source]
        source: ContentError,
    },
    #[error("layer {layer}: {source}")]
    MediaType {
        layer: Digest,
        #[source]
        source: LayerError,
    },
    #[error("layer {layer}: {source}")]
    Apply {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("layer {layer}: reading layer: {source}")]
    Read {
        layer: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: not unpacked because a layer below it failed")]
    ParentFailed { layer: Digest },
    #[error("layer {layer}: {source}")]
    Snapshot {
        layer: Digest,
        #[source]
        source: SnapshotError,
    },
}

/// How a layer learns that its parent committed, and tells its child.
pub(crate) struct ChainLink {
    /// Resolves true when the parent committed, false (or hangs up) when it failed; None for
    /// the base layer.
    wait_parent: Option<Receiver<bool>>,
    done: Sender<bool>,
}

impl ChainLink {
    /// One link per layer of a chain of `n`, base first.
    pub(crate) fn chain(n: usize) -> Vec<ChainLink> {
        let mut parent_done: Option<Receiver<bool>> = None;
        (0..n)
            .map(|_| {
                let (done, rx) = channel();
                ChainLink {
                    wait_parent: parent_done.replace(rx),
                    done,
                }
            })
            .collect()
    }

    /// Tells the child layer this one is committed (used for layers already unpacked).
    pub(crate) fn committed(self) {
        let _ = self.done.send(true);
    }
}

/// Waits for the parent's outcome; Err when it failed.
fn wait_for_parent(rx: Option<Receiver<bool>>, layer: &ChainLayer) -> Result<(), ChainError> {
    match rx.map(|rx| rx.recv()) {
        None | Some(Ok(true)) => Ok(()),
        Some(_) => Err(ChainError::ParentFailed {
            layer: layer.blob.clone(),
        }),
    }
}

/// Unpacks the layers of chains into snapshots (see the module doc). Cheap to clone; clones
/// share the extraction permits.
#[derive(Clone)]
pub(crate) struct ChainUnpacker {
    content: ContentStore,
    snapshots: SnapshotStore,
    /// With `defer_lower` set and no lowers: each layer's first pass.
    apply: ApplyOptions,
    permits: Arc<Semaphore>,
    /// Waits for permits from the blocking threads the layers are unpacked on.
    runtime: tokio::runtime::Handle,
}

impl ChainUnpacker {
    /// An unpacker applying layers with `apply` (its `defer_lower` and `lower_dirs` are set
    /// here), extracting as many layers at once as there are CPUs, at most 4.
    pub(crate) fn new(
        content: ContentStore,
        snapshots: SnapshotStore,
        mut apply: ApplyOptions,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        apply.defer_lower = true;
        apply.lower_dirs = Vec::new();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4);
        Self {
            content,
            snapshots,
            apply,
            permits: Arc::new(Semaphore::new(workers)),
            runtime,
        }
    }

    /// Unpacks every layer of a chain whose blobs are all in the content store, each on its
    /// own thread; returns the snapshots, base first, or the first layer's failure (layers
    /// above a failed one fail too, without being committed). Blocking; must not run on a
    /// runtime thread.
    pub(crate) fn unpack_all(&self, chain: &[ChainLayer]) -> Result<Vec<Snapshot>, ChainError> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chain
                .iter()
                .zip(ChainLink::chain(chain.len()))
                .map(|(layer, link)| scope.spawn(move || self.unpack(layer, link)))
                .collect();
            let results: Vec<_> = handles
                .into_iter()
                .zip(chain)
                .map(|(h, layer)| {
                    h.join().unwrap_or_else(|_| {
                        Err(ChainError::Read {
                            layer: layer.blob.clone(),
                            source: io::Error::other("unpack thread panicked"),
                        })
                    })
                })
                .collect();
            results.into_iter().collect()
        })
    }

    /// Creates the snapshot of one layer (or reuses the one another pull made meanwhile) and
    /// tells the layer above how it went. Blocking.
    pub(crate) fn unpack(
        &self,
        layer: &ChainLayer,
        link: ChainLink,
    ) -> Result<Snapshot, ChainError> {
        let ChainLink { wait_parent, done } = link;
        let result = self.create(layer, wait_parent);
        let _ = done.send(result.is_ok());
        result
    }

    fn create(
        &self,
        layer: &ChainLayer,
        wait_parent: Option<Receiver<bool>>,
    ) -> Result<Snapshot, ChainError> {
        let mut wait_parent = wait_parent;
        let result = self
            .snapshots
            .create(&layer.chain_id, layer.parent.as_ref(), |dir| {
                self.fill(layer, dir, wait_parent.take())
            });
        // Made by another process meanwhile (fill not run): still wait, so failures below are
        // reported in order.
        wait_for_parent(wait_parent, layer)?;
        result.map_err(|e| match e {
            // Our own error, boxed by the snapshot store: surface it as it was.
            SnapshotError::Fill { source, chain_id } => match source.downcast::<ChainError>() {
                Ok(e) => *e,
                Err(source) => ChainError::Snapshot {
                    layer: layer.blob.clone(),
                    source: SnapshotError::Fill { chain_id, source },
                },
            },
            source => ChainError::Snapshot {
                layer: layer.blob.clone(),
                source,
            },
        })
    }

    /// Applies the layer (holding an extraction permit), waits for the parent snapshot, then
    /// finishes what needed the lower layers.
    fn fill(
        &self,
        layer: &ChainLayer,
        dir: &Path,
        wait_parent: Option<Receiver<bool>>,
    ) -> Result<(), ChainError> {
        let stats = {
            // The semaphore is never closed, so acquiring cannot fail.
            let _permit = self.runtime.block_on(self.permits.acquire());
            self.apply(layer, dir)?
        };
        wait_for_parent(wait_parent, layer)?;
        if !stats.deferred.is_empty() {
            let finish = ApplyOptions {
                lower_dirs: self.lower_dirs(layer)?,
                defer_lower: false,
                ..self.apply.clone()
            };
            apply_deferred(dir, &stats.deferred, &finish).map_err(|source| ChainError::Apply {
                layer: layer.blob.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The fs dirs of the committed ancestors of `layer`, nearest first.
    fn lower_dirs(&self, layer: &ChainLayer) -> Result<Vec<PathBuf>, ChainError> {
        lower_dirs(&self.snapshots, layer.parent.as_ref()).map_err(|source| ChainError::Snapshot {
            layer: layer.blob.clone(),
            source,
        })
    }

    /// Inflates on a helper thread and hashes + extracts on this one.
    fn apply(&self, layer: &ChainLayer, dir: &Path) -> Result<ApplyStats, ChainError> {
        let compression = Compression::from_media_type(&layer.media_type).map_err(|source| {
            ChainError::MediaType {
                layer: layer.blob.clone(),
                source,
            }
        })?;
        let blob = self
            .content
            .open_blob(&layer.blob)
            .map_err(|source| ChainError::Content {
                layer: layer.blob.clone(),
                source,
            })?;
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
        std::thread::scope(|s| {
            let inflater = s.spawn(move || inflate(blob, compression, tx));
            let applied = {
                let mut tar = DiffIdReader::new(ChannelReader::new(rx));
                match apply_layer(dir, &mut tar, &self.apply) {
                    Ok(stats) => {
                        tar.finish()
                            .map(|d| (d, stats))
                            .map_err(|source| ChainError::Read {
                                layer: layer.blob.clone(),
                                source,
                            })
                    }
                    Err(source) => Err(ChainError::Apply {
                        layer: layer.blob.clone(),
                        source,
                    }),
                }
                // `tar` (the channel's receiver) is dropped here, which unblocks the inflater
                // if extraction stopped early.
            };
            let _ = inflater.join();
            let (actual, stats) = applied?;
            if actual != layer.diff_id {
                return Err(ChainError::DiffIdMismatch {
                    layer: layer.blob.clone(),
                    expected: layer.diff_id.clone(),
                    actual,
                });
            }
            Ok(stats)
        })
    }
}

/// The fs dirs of the committed ancestors of `parent`, nearest first (for copy-up of
/// hardlinks and inherited attributes of implicit parent directories).
pub(crate) fn lower_dirs(
    snapshots: &SnapshotStore,
    parent: Option<&Digest>,
) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut out = Vec::new();
    let mut next = parent.cloned();
    while let Some(c) = next {
        match snapshots.get(&c)? {
            Some(s) => {
                out.push(s.path);
                next = s.parent;
            }
            None => break,
        }
    }
    Ok(out)
}

/// Decompresses `blob` into full buffers sent down `tx`, until the end, an error (sent too),
/// or the extractor hanging up (it reports why).
fn inflate(
    blob: impl Read + Send + 'static,
    compression: Compression,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) {
    let mut reader = match decompress(blob, compression) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    loop {
        let mut buf = vec![0u8; PIPE_BUF];
        match read_full(&mut reader, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Ok(buf)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Reads until `buf` is full or the end, so the channel carries full buffers.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The receiving end of the inflate thread as a `Read`.
struct ChannelReader {
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx: Some(rx),
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(rx) = &self.rx else { return Ok(0) };
            match rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.rx = None;
                    return Err(e);
                }
                Err(_) => {
                    self.rx = None;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_links_each_layer_to_the_one_below() {
        let d = |s: &str| Digest::of_bytes(s.as_bytes());
        let (blobs, diffs, chains) = (
            [d("b0"), d("b1"), d("b2")],
            [d("d0"), d("d1"), d("d2")],
            [d("c0"), d("c1"), d("c2")],
        );
        let chain = ChainLayer::chain(blobs.iter().map(|b| (b, "x")), &diffs, &chains);
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[0].parent, None);
        assert_eq!(chain[1].parent.as_ref(), Some(&chains[0]));
        assert_eq!(chain[2].parent.as_ref(), Some(&chains[1]));
        assert_eq!(chain[2].diff_id, diffs[2]);
    }

    #[test]
    fn a_failed_layer_fails_every_layer_above_it() {
        let mut links = ChainLink::chain(3).into_iter();
        let (base, mid, top) = (
            links.next().unwrap(),
            links.next().unwrap(),
            links.next().unwrap(),
        );
        let layer = ChainLayer {
            blob: Digest::of_bytes(b"b"),
            media_type: String::new(),
            diff_id: Digest::of_bytes(b"d"),
            chain_id: Digest::of_bytes(b"c"),
            parent: None,
        };
        assert!(base.wait_parent.is_none());
        // The base fails (its sender reports false); the middle layer sees it and, failing,
        // hangs up on the top one.
        let _ = base.done.send(false);
        assert!(wait_for_parent(mid.wait_parent, &layer).is_err());
        drop(mid.done);
        assert!(matches!(
            wait_for_parent(top.wait_parent, &layer),
            Err(ChainError::ParentFailed { .. })
        ));
    }

    #[test]
    fn the_channel_reader_yields_the_bytes_in_order_then_the_error() {
        let (tx, rx) = sync_channel(4);
        tx.send(Ok(b"ab".to_vec())).unwrap();
        tx.send(Ok(b"cd".to_vec())).unwrap();
        tx.send(Err(io::Error::other("inflate failed"))).unwrap();
        let mut r = ChannelReader::new(rx);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"abcd");
        assert_eq!(err.to_string(), "inflate failed");
    }
}

//! Unpacking one downloaded layer into its snapshot, verifying its DiffID on the way.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};

use std::sync::Arc;

use super::PullError;
use crate::digest::Digest;
use crate::layer::{decompress, Compression, DiffIdReader};
use crate::registry::Descriptor;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::ImageStore;
use crate::unpack::{apply_deferred, apply_layer, ApplyOptions, ApplyStats};

/// Size of the buffers handed from the inflate thread to the extract thread.
const PIPE_BUF: usize = 256 << 10;
/// Buffers in flight between the two threads (bounds memory to a few MiB).
const PIPE_DEPTH: usize = 8;

/// Everything needed to unpack one layer, owned, so it can run on a blocking thread.
pub(crate) struct UnpackJob {
    pub(crate) image: String,
    pub(crate) store: ImageStore,
    pub(crate) layer: Descriptor,
    pub(crate) diff_id: Digest,
    pub(crate) chain_id: Digest,
    pub(crate) parent: Option<Digest>,
    /// With `defer_lower` set: applied before the parent exists, finished after.
    pub(crate) apply: ApplyOptions,
    /// Limits concurrent extractions; held only while applying, never while waiting for the
    /// parent (that could deadlock: a child holding the last permit waiting for its parent).
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    pub(crate) runtime: tokio::runtime::Handle,
    /// Resolves when the parent layer committed (true) or failed (false / sender dropped).
    pub(crate) wait_parent: Option<std::sync::mpsc::Receiver<bool>>,
    /// Tells the child layer how this one ended.
    pub(crate) done: std::sync::mpsc::Sender<bool>,
}

/// Why filling a snapshot failed (boxed into [`SnapshotError::Fill`] by the snapshot store).
#[derive(Debug, thiserror::Error)]
enum FillError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("{0}")]
    Other(String),
}

impl UnpackJob {
    /// Creates the snapshot for this layer's chain id (or reuses one another pull made
    /// meanwhile). Blocking.
    pub(crate) fn run(mut self) -> Result<Snapshot, PullError> {
        let done = self.done.clone();
        let result = self.create();
        let _ = done.send(result.is_ok());
        result
    }

    fn create(&mut self) -> Result<Snapshot, PullError> {
        let wait_parent = self.wait_parent.take();
        let unpack_err = |source: SnapshotError| PullError::Unpack {
            image: self.image.clone(),
            layer: self.layer.digest.clone(),
            source: Box::new(source),
        };
        let mut wait_parent = wait_parent;
        let result = self
            .store
            .snapshots()
            .create(&self.chain_id, self.parent.as_ref(), |dir| {
                self.fill(dir, wait_parent.take()).map_err(|e| match e {
                    // Keep our typed error recognisable through the snapshot store's box.
                    e @ PullError::DiffIdMismatch { .. } => FillError::Pull(e),
                    // Wrapped again below with image, layer and chain: keep only the cause,
                    // so the message does not name them twice.
                    PullError::Unpack { source, .. } => FillError::Other(match *source {
                        SnapshotError::Fill { source, .. } => source.to_string(),
                        other => other.to_string(),
                    }),
                    other => FillError::Other(other.to_string()),
                })
            });
        // Made by another pull meanwhile (fill not run): still report failures below in order.
        if let Some(rx) = wait_parent {
            if rx.recv() != Ok(true) {
                return Err(self.parent_failed());
            }
        }
        match result {
            Ok(s) => Ok(s),
            Err(SnapshotError::Fill { source, chain_id }) => match source.downcast::<FillError>() {
                Ok(boxed) => match *boxed {
                    FillError::Pull(e) => Err(e),
                    FillError::Other(msg) => Err(unpack_err(SnapshotError::Fill {
                        chain_id,
                        source: msg.into(),
                    })),
                },
                Err(source) => Err(unpack_err(SnapshotError::Fill { chain_id, source })),
            },
            Err(e) => Err(unpack_err(e)),
        }
    }

    fn parent_failed(&self) -> PullError {
        PullError::Unpack {
            image: self.image.clone(),
            layer: self.layer.digest.clone(),
            source: Box::new(SnapshotError::Fill {
                chain_id: self.chain_id.clone(),
                source: "not unpacked because a layer below it failed".into(),
            }),
        }
    }

    /// Applies the layer (holding an extraction permit), waits for the parent snapshot, then
    /// finishes what needed the lower layers.
    fn fill(
        &self,
        dir: &std::path::Path,
        wait_parent: Option<std::sync::mpsc::Receiver<bool>>,
    ) -> Result<(), PullError> {
        let stats = {
            let _permit =
                self.runtime
                    .block_on(self.permits.acquire())
                    .map_err(|e| PullError::Task {
                        image: self.image.clone(),
                        what: "unpack queue",
                        detail: e.to_string(),
                    })?;
            self.apply(dir)?
        };
        if let Some(rx) = wait_parent {
            if rx.recv() != Ok(true) {
                return Err(self.parent_failed());
            }
        }
        if !stats.deferred.is_empty() {
            let lower_dirs =
                self.store
                    .lower_dirs(self.parent.as_ref())
                    .map_err(|e| PullError::Unpack {
                        image: self.image.clone(),
                        layer: self.layer.digest.clone(),
                        source: Box::new(SnapshotError::Fill {
                            chain_id: self.chain_id.clone(),
                            source: e.to_string().into(),
                        }),
                    })?;
            let finish = ApplyOptions {
                lower_dirs,
                defer_lower: false,
                ..self.apply.clone()
            };
            apply_deferred(dir, &stats.deferred, &finish).map_err(|e| PullError::Unpack {
                image: self.image.clone(),
                layer: self.layer.digest.clone(),
                source: Box::new(SnapshotError::Fill {
                    chain_id: self.chain_id.clone(),
                    source: e.to_string().into(),
                }),
            })?;
        }
        Ok(())
    }

    /// Inflates on a helper thread and hashes + extracts on this one, so a layer uses two
    /// cores: inflate and tar extraction cost about the same.
    fn apply(&self, dir: &std::path::Path) -> Result<ApplyStats, PullError> {
        let other = |reason: String| PullError::Unpack {
            image: self.image.clone(),
            layer: self.layer.digest.clone(),
            source: Box::new(SnapshotError::Fill {
                chain_id: self.chain_id.clone(),
                source: reason.into(),
            }),
        };
        let compression = Compression::from_media_type(&self.layer.media_type)
            .map_err(|e| other(e.to_string()))?;
        let blob = self
            .store
            .content()
            .open_blob(&self.layer.digest)
            .map_err(|source| PullError::Content {
                image: self.image.clone(),
                digest: self.layer.digest.clone(),
                source: Box::new(source),
            })?;
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(PIPE_DEPTH);
        std::thread::scope(|s| {
            let inflater = s.spawn(move || {
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
                                return; // the extractor stopped (error); it reports why
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            });
            let applied = {
                let mut tar = DiffIdReader::new(ChannelReader::new(rx));
                match apply_layer(dir, &mut tar, &self.apply) {
                    Ok(stats) => tar
                        .finish()
                        .map(|d| (d, stats))
                        .map_err(|e| other(format!("reading layer: {e}"))),
                    Err(e) => Err(other(e.to_string())),
                }
                // `tar` (the channel's receiver) is dropped here, which unblocks the inflater
                // if extraction stopped early.
            };
            let _ = inflater.join();
            let (actual, stats) = applied?;
            if actual != self.diff_id {
                return Err(PullError::DiffIdMismatch {
                    image: self.image.clone(),
                    layer: self.layer.digest.clone(),
                    expected: self.diff_id.clone(),
                    actual,
                });
            }
            Ok(stats)
        })
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

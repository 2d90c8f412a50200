//! Unpacking one downloaded layer into its snapshot, verifying its DiffID on the way.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};

use super::PullError;
use crate::content::ContentStore;
use crate::digest::Digest;
use crate::layer::{decompress, Compression, DiffIdReader};
use crate::registry::Descriptor;
use crate::snapshot::{Snapshot, SnapshotError, SnapshotStore};
use crate::unpack::{apply_layer, ApplyOptions};

/// Size of the buffers handed from the inflate thread to the extract thread.
const PIPE_BUF: usize = 256 << 10;
/// Buffers in flight between the two threads (bounds memory to a few MiB).
const PIPE_DEPTH: usize = 8;

/// Everything needed to unpack one layer, owned, so it can run on a blocking thread.
pub(crate) struct UnpackJob {
    pub(crate) image: String,
    pub(crate) content: ContentStore,
    pub(crate) snapshots: SnapshotStore,
    pub(crate) layer: Descriptor,
    pub(crate) diff_id: Digest,
    pub(crate) chain_id: Digest,
    pub(crate) parent: Option<Digest>,
    pub(crate) apply: ApplyOptions,
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
    pub(crate) fn run(self) -> Result<Snapshot, PullError> {
        let unpack_err = |source: SnapshotError| PullError::Unpack {
            image: self.image.clone(),
            layer: self.layer.digest.clone(),
            source: Box::new(source),
        };
        let result = self
            .snapshots
            .create(&self.chain_id, self.parent.as_ref(), |dir| {
                self.fill(dir).map_err(|e| match e {
                    // Keep our typed error recognisable through the snapshot store's box.
                    e @ PullError::DiffIdMismatch { .. } => FillError::Pull(e),
                    other => FillError::Other(other.to_string()),
                })
            });
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

    /// Inflates on a helper thread and hashes + extracts on this one, so a layer uses both
    /// cores: inflate and tar extraction cost about the same.
    fn fill(&self, dir: &std::path::Path) -> Result<(), PullError> {
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
            .content
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
            let digest = {
                let mut tar = DiffIdReader::new(ChannelReader::new(rx));
                match apply_layer(dir, &mut tar, &self.apply) {
                    Ok(_) => tar
                        .finish()
                        .map_err(|e| other(format!("reading layer: {e}"))),
                    Err(e) => Err(other(e.to_string())),
                }
                // `tar` (the channel's receiver) is dropped here, which unblocks the inflater
                // if extraction stopped early.
            };
            let _ = inflater.join();
            let actual = digest?;
            if actual != self.diff_id {
                return Err(PullError::DiffIdMismatch {
                    image: self.image.clone(),
                    layer: self.layer.digest.clone(),
                    expected: self.diff_id.clone(),
                    actual,
                });
            }
            Ok(())
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

//! Content digests computed while data streams through, never by buffering it. The digest
//! type and its hasher are the image crate's (`zlayer_image::digest`).

use std::io::Read;
use std::sync::{Arc, Mutex};

use zlayer_image::digest::DigestHasher;
use zlayer_image::Digest;

use crate::error::{Error, Result};

/// Parses a `sha256:<64 lowercase hex>` digest, naming it when it is not one.
pub fn parse_digest(digest: &str) -> Result<Digest> {
    Digest::parse(digest).map_err(|e| Error::Metadata {
        what: digest.to_string(),
        reason: e.to_string(),
    })
}

/// Running hash and byte count, shared with the [`HashingReader`] that feeds it.
#[derive(Clone, Default)]
pub struct HashState(Arc<Mutex<DigestHasher>>);

impl HashState {
    /// `sha256:<hex>` of everything read so far, and how many bytes that was.
    pub fn finish(&self) -> (String, u64) {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (guard.clone().finish().to_string(), guard.len())
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    state: HashState,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            state: HashState::default(),
        }
    }

    /// A handle to read the hash later, after the reader was moved into a decoder.
    pub fn state(&self) -> HashState {
        self.state.clone()
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut guard = self.state.0.lock().unwrap_or_else(|p| p.into_inner());
        guard.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads `r` to its end, discarding the bytes (so a wrapping hasher sees all of them).
pub fn drain(r: &mut dyn Read) -> std::io::Result<u64> {
    std::io::copy(r, &mut std::io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_passes() {
        let mut r = HashingReader::new(&b"abc"[..]);
        let st = r.state();
        drain(&mut r).unwrap();
        assert_eq!(
            st.finish(),
            (
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                3
            )
        );
        assert!(parse_digest("sha256:ABC").is_err());
        assert!(parse_digest("md5:00").is_err());
    }
}

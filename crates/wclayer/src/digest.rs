//! Content digests computed while data streams through, never by buffering it.

use std::io::Read;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Checks `sha256:<64 lowercase hex>` and returns the hex part.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Metadata {
            what: digest.to_string(),
            reason: "only sha256 digests are supported".into(),
        })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::Metadata {
            what: digest.to_string(),
            reason: "not a sha256 digest (64 lowercase hex digits)".into(),
        });
    }
    Ok(hex)
}

/// Running hash and byte count, shared with the [`HashingReader`] that feeds it.
#[derive(Clone, Default)]
pub struct HashState(Arc<Mutex<(Sha256, u64)>>);

impl HashState {
    /// `sha256:<hex>` of everything read so far, and how many bytes that was.
    pub fn finish(&self) -> (String, u64) {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (hasher, n) = &*guard;
        (
            format!("sha256:{}", hex::encode(hasher.clone().finalize())),
            *n,
        )
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
        guard.0.update(&buf[..n]);
        guard.1 += n as u64;
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
        assert!(sha256_hex("sha256:ABC").is_err());
        assert!(sha256_hex("md5:00").is_err());
    }
}

//! Layer blobs: compression by media type, streaming decompression, and the DiffID (the sha256
//! of the *uncompressed* tar, which the image config lists in `rootfs.diff_ids`).

use std::io::{self, BufReader, Read};

use crate::digest::{Digest, DigestHasher};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayerError {
    #[error("unsupported layer media type {0:?}: expected an OCI (application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]) or Docker (application/vnd.docker.image.rootfs.diff.tar[.gzip]) layer type")]
    UnsupportedMediaType(String),
}

impl Compression {
    /// The compression of a layer given its manifest media type. OCI, OCI non-distributable,
    /// Docker and Docker foreign layer types are accepted; anything else is an error naming it.
    pub fn from_media_type(media_type: &str) -> Result<Self, LayerError> {
        let unsupported = || LayerError::UnsupportedMediaType(media_type.to_string());
        let rest = if let Some(r) = media_type.strip_prefix("application/vnd.oci.image.layer.") {
            r.strip_prefix("nondistributable.").unwrap_or(r)
        } else if let Some(r) = media_type.strip_prefix("application/vnd.docker.image.rootfs.") {
            r.strip_prefix("foreign.").unwrap_or(r)
        } else if media_type == "application/x-tar" || media_type == "application/tar" {
            return Ok(Self::None);
        } else {
            return Err(unsupported());
        };
        match rest {
            "v1.tar" | "diff.tar" => Ok(Self::None),
            "v1.tar+gzip" | "diff.tar.gzip" | "diff.tar+gzip" => Ok(Self::Gzip),
            "v1.tar+zstd" | "diff.tar.zstd" | "diff.tar+zstd" => Ok(Self::Zstd),
            _ => Err(unsupported()),
        }
    }

    /// Guesses the compression from the first bytes of a blob (for `docker save` archives,
    /// whose layers carry no media type): gzip and zstd magic numbers, else uncompressed.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI media type for a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Wraps `reader` in a streaming decompressor. Gzip uses flate2 (zlib-ng backend) with
/// `MultiGzDecoder`, because some layer producers write several gzip members back to back.
pub fn decompress<R: Read + Send + 'static>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            256 << 10,
            reader,
        ))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(
            BufReader::with_capacity(256 << 10, reader),
        )?),
    })
}

/// A reader that sha256-hashes everything read through it: put it between the decompressor
/// and the tar parser to compute a layer's DiffID in the same pass as unpacking.
pub struct DiffIdReader<R> {
    inner: R,
    hasher: DigestHasher,
}

impl<R: Read> DiffIdReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: DigestHasher::new(),
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Reads whatever the consumer left unread (a tar parser stops at the end-of-archive
    /// blocks; padding may follow) and returns the digest of the whole stream.
    pub fn finish(self) -> io::Result<Digest> {
        Ok(self.finish_with_len()?.0)
    }

    /// Like [`finish`](Self::finish), also returning the uncompressed length.
    pub fn finish_with_len(mut self) -> io::Result<(Digest, u64)> {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len))
    }
}

impl<R: Read> Read for DiffIdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types() {
        use Compression::*;
        for (mt, c) in [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Gzip,
            ),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Gzip,
            ),
            ("application/vnd.docker.image.rootfs.diff.tar", None),
        ] {
            assert_eq!(Compression::from_media_type(mt), Ok(c), "{mt}");
        }
        let err = Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+lz4")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tar+lz4"), "{err}");
        assert!(Compression::from_media_type("text/plain").is_err());
    }

    fn roundtrip(c: Compression, data: &[u8]) -> Vec<u8> {
        let compressed = match c {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
        };
        assert_eq!(Compression::detect(&compressed), c);
        let mut out = Vec::new();
        decompress(std::io::Cursor::new(compressed), c)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn decompresses_each_kind() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 97) as u8).collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(roundtrip(c, &data), data);
        }
    }

    #[test]
    fn multi_member_gzip() {
        let mut all = Vec::new();
        for part in [&b"first "[..], b"second"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            all.extend(e.finish().unwrap());
        }
        let mut out = String::new();
        decompress(std::io::Cursor::new(all), Compression::Gzip)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first second");
    }

    #[test]
    fn diff_id_covers_unread_tail() {
        let data = b"0123456789abcdef".repeat(1000);
        let mut r = DiffIdReader::new(&data[..]);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        let (d, n) = r.finish_with_len().unwrap();
        assert_eq!(d, Digest::of_bytes(&data));
        assert_eq!(n, data.len() as u64);
    }
}

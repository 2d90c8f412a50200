//! Layer compression by media type (or, for the CLI, by magic bytes), as streaming decoders
//! that hand their source back so the rest of a blob can be drained and hashed.

use std::io::{BufReader, Read};

use crate::error::{Error, Result};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Layer media types we accept: OCI, Docker, and the foreign / non-distributable variants
/// Windows base layers are published with.
pub fn compression_for_media_type(media_type: &str) -> Result<Compression> {
    Ok(match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        other => {
            return Err(Error::Metadata {
                what: format!("layer media type {other:?}"),
                reason: "not a known tar, tar+gzip or tar+zstd layer type".into(),
            })
        }
    })
}

/// Guesses compression from the first bytes: gzip `1f 8b`, zstd `28 b5 2f fd`, else a plain tar.
pub fn compression_from_magic(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A streaming decoder over `R`.
pub enum Decoder<R: Read> {
    Plain(R),
    Gzip(flate2::read::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Decoder<R> {
    /// Wraps `inner` for `compression`.
    pub fn new(inner: R, compression: Compression) -> Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::Plain(inner),
            Compression::Gzip => Decoder::Gzip(flate2::read::MultiGzDecoder::new(inner)),
            Compression::Zstd => Decoder::Zstd(
                zstd::stream::read::Decoder::new(inner)
                    .map_err(|e| Error::Tar(format!("starting zstd decoder: {e}")))?,
            ),
        })
    }

    /// The compressed source back (bytes the decoder buffered were already read from it).
    pub fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish().into_inner(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

//! One error type for the crate, so callers can tell "the layer is bad" (with the entry or digest
//! that is wrong) apart from "the machine failed us" (I/O with the path that failed).

use std::path::PathBuf;

/// Everything that can go wrong while fetching, verifying or converting a Windows layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed; `what` names the operation and `path` the file it was about.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The layer tar itself is malformed or holds something we refuse; `entry` is the tar path.
    #[error("layer entry {entry:?}: {reason}")]
    BadEntry { entry: String, reason: String },
    /// A tar-level read failure (truncated archive, bad header checksum, ...).
    #[error("reading layer tar: {0}")]
    Tar(String),
    /// The fetched blob does not hash to the digest the manifest promised.
    #[error("layer blob {expected}: content hashes to {actual} (corrupt or wrong blob)")]
    DigestMismatch { expected: String, actual: String },
    /// The blob length differs from the descriptor's size.
    #[error("layer blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// The uncompressed tar does not hash to the config's `rootfs.diff_ids` entry.
    #[error(
        "layer {digest}: uncompressed content hashes to {actual}, config diff_id is {expected}"
    )]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    /// A hard link whose target exists neither in this layer nor in any parent.
    #[error("hard link {name:?}: target {target:?} not found in this layer or its {parents} parent layer(s)")]
    MissingLinkTarget {
        name: String,
        target: String,
        parents: usize,
    },
    /// A layer without parents listed a removal.
    #[error("base layer cannot have tombstones (entry {entry:?})")]
    BaseLayerTombstone { entry: String },
    /// No layer of the chain carries a utility VM boot loader.
    #[error("image is not Hyper-V bootable: no layer has UtilityVM/Files/EFI/Microsoft/Boot/bootmgfw.efi (searched {searched} layer(s))")]
    NotHyperVBootable { searched: usize },
    /// Fetching a blob failed (registry, OCI layout or URL fallback).
    #[error("fetching {what}: {reason}")]
    Fetch { what: String, reason: String },
    /// Image metadata (index, manifest, config) is missing or malformed.
    #[error("image metadata {what}: {reason}")]
    Metadata { what: String, reason: String },
    /// Something only Windows can do was asked of a host that cannot.
    #[error("{0} needs Windows (Win32 or the Host Compute Service)")]
    NeedsWindows(String),
    /// A Win32 or vmcompute call failed.
    #[error("{call} on {path}: {reason}")]
    Win32 {
        call: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// Crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an [`std::io::Error`] with the operation and path it concerned.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// A problem with one tar entry.
    pub fn entry(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadEntry {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

/// Adds a path and an operation name to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

//! zlayer-image: everything from an image reference to a verified, unpacked, shareable root
//! filesystem. It knows nothing about containers.

pub mod digest;
pub mod reference;

// Digests, chain ids and references are portable: the Windows layer converter (wclayer) uses
// them on Windows too. Everything else needs Unix (flock, *at calls, overlay whiteouts).

// local half: content store, layers, unpack, snapshots, image index
#[cfg(unix)]
pub mod content;
#[cfg(unix)]
mod db;
#[cfg(unix)]
pub use db::DbError;
#[cfg(unix)]
pub mod flatten;
#[cfg(unix)]
pub mod layer;
#[cfg(unix)]
pub mod load;
#[cfg(unix)]
pub mod snapshot;
#[cfg(unix)]
pub mod store;
#[cfg(unix)]
pub mod unpack;

#[cfg(all(test, unix))]
mod testutil;

pub use digest::{chain_ids, Digest};
pub use reference::Reference;
#[cfg(unix)]
pub use store::ImageStore;
#[cfg(unix)]
pub mod pull;
#[cfg(unix)]
pub mod registry;

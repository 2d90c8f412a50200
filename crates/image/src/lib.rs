//! zlayer-image: everything from an image reference to a verified, unpacked, shareable root
//! filesystem. It knows nothing about containers.

pub mod digest;
pub mod reference;

// local half: content store, layers, unpack, snapshots, image index
pub mod content;
mod db;
pub use db::DbError;
pub mod flatten;
pub mod layer;
pub mod load;
pub mod snapshot;
pub mod store;
pub mod unpack;

#[cfg(test)]
mod testutil;

pub use digest::Digest;
pub use reference::Reference;
pub use store::ImageStore;
pub mod pull;
pub mod registry;

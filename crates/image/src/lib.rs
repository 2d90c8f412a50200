//! zlayer-image: everything from an image reference to a verified, unpacked, shareable root
//! filesystem. It knows nothing about containers.

pub mod digest;
pub mod reference;

// local half: content store, layers, unpack, snapshots, image index
pub mod content;
pub mod layer;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
pub mod registry;

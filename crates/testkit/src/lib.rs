//! zlayer-testkit: what the project's tests stand on.
//!
//! - [`prereq`]: prerequisite checks (`require_root!()`, `require_bin!("skopeo")`): skip
//!   with a printed reason, or fail under `CI=true`.
//! - [`registry`]: [`registry::LocalRegistry`] runs Debian's `docker-registry` on a free
//!   loopback port.
//! - [`fixtures`]: reproducible OCI fixture images (`busybox`, `rules`, `big`), cached per
//!   machine via [`fixtures::cached`].
//! - [`push`]: push a fixture layout to a registry with skopeo, digest-checked.

pub mod fixtures;
pub mod flaky_proxy;
pub mod prereq;
pub mod push;
pub mod registry;

pub use fixtures::{cached, Layout};
pub use registry::LocalRegistry;

//! Windows container layers: OCI layer tars converted into the folders the Windows Host Compute
//! Service imports (see `shared/design/windows-layers.md`).
//!
//! Everything that decides bytes — PAX metadata, backup stream framing, reparse and EA buffers,
//! FILETIMEs, staging layout, tombstones, link resolution, digest and DiffID checks — is portable
//! and tested on Linux. The calls only Windows can make sit behind [`host::LayerHost`]:
//! [`linux_host::LinuxHost`] writes files plus a `manifest.json`, `windows_host::WindowsHost`
//! calls Win32 and vmcompute.dll.

pub mod backup_stream;
pub mod base_layer;
pub mod cli;
pub mod convert;
pub mod decompress;
pub mod diff_layer;
pub mod digest;
pub mod dispatch;
pub mod ea;
pub mod error;
pub mod fileinfo;
pub mod filetime;
pub mod host;
pub mod linux_host;
pub mod pax;
pub mod pipeline;
#[cfg(unix)]
pub mod registry_source;
pub mod reparse;
pub mod source;
#[cfg(windows)]
pub mod windows_host;
pub mod winpath;

pub use cli::{convert_layer_cli, unpack_image_cli};
pub use convert::{convert_layer, PreparedLayer};
pub use error::{Error, Result};
pub use host::LayerHost;
pub use linux_host::LinuxHost;
pub use pipeline::{
    locate_uvm_boot_files, unpack_windows_image, unpack_windows_image_with, UnpackedImage,
    UvmBootFiles,
};
pub use source::{
    ConfigDescriptor, LayerSource, OciLayoutSource, RegistryAuth, ResolvedLayerDescriptor,
    WindowsImage,
};

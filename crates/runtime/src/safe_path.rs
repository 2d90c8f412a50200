//! Path resolution confined to a container's root filesystem.
//!
//! Image content is untrusted: `/etc/passwd` or a working directory may be a symlink
//! pointing at `/` of the host. Every lookup inside a rootfs therefore goes through
//! `openat2(RESOLVE_IN_ROOT)`, which makes the kernel treat the rootfs as `/` for
//! absolute symlinks and `..`. Hand-written (instead of `pathrs`) because we need
//! only these two operations and `nix` already exposes `openat2`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    let f = File::open(root)?;
    Ok(f.into())
}

fn openat_in_root(root: &OwnedFd, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let mut how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    if flags.contains(OFlag::O_CREAT) {
        // openat2 rejects a mode without O_CREAT, and needs one with it.
        how = how.mode(Mode::from_bits_truncate(0o644));
    }
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = openat2(root.as_raw_fd(), rel, how).map_err(io::Error::from)?;
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// The most [`read_in_root`] reads from one file of an image: an /etc/passwd or /etc/group
/// is a few kilobytes even on large systems; anything bigger is refused, not buffered.
pub const MAX_ROOTFS_FILE: u64 = 4 << 20;

/// Reads a file of the container's filesystem, `None` when it does not exist.
///
/// Image content is hostile: symlinks resolve inside the root; the file must be a regular
/// file (a FIFO would block the open forever, a character device such as /dev/zero would be
/// read without end) no larger than `max` bytes, checked both on the inode's size and while
/// reading (a file growing under us).
pub fn read_in_root(root: &Path, path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let rootfd = open_root(root)?;
    // O_PATH first: opening a device node for real can have effects of its own (a
    // watchdog starts counting, a tape rewinds), so the type is checked before any open.
    let handle = match openat_in_root(&rootfd, relative(path), OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = File::from(handle.try_clone()?).metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is not a regular file but {}", describe_type(&meta)),
        ));
    }
    if meta.len() > max {
        return Err(too_big(meta.len(), max));
    }
    // Reopening the O_PATH descriptor through /proc opens the very inode checked above, so
    // nothing can be swapped in between; O_NONBLOCK is belt and braces.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_big(buf.len() as u64, max));
    }
    Ok(Some(buf))
}

fn too_big(len: u64, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("is larger than the {max} bytes allowed ({len} bytes)"),
    )
}

/// "a character device", "a FIFO", ... for errors about a file of the wrong type.
pub fn describe_type(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Whether `path` exists inside the rootfs (following symlinks within it).
pub fn exists_in_root(root: &Path, path: &Path) -> io::Result<bool> {
    let rootfd = open_root(root)?;
    match openat_in_root(&rootfd, relative(path), OFlag::O_PATH) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What `path` is inside the root (following symlinks within it): `None` when nothing
/// exists there. For checks that want a clear error before the runtime fails with errno.
pub fn metadata_in_root(root: &Path, path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    let rootfd = open_root(root)?;
    match openat_in_root(&rootfd, relative(path), OFlag::O_PATH) {
        Ok(fd) => File::from(fd).metadata().map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `mkdir -p` inside the rootfs; components created get `mode` and root ownership
/// (docker creates a missing working directory the same way).
pub fn mkdir_all_in_root(root: &Path, path: &Path, mode: u32) -> io::Result<()> {
    mkdir_all_depth(root, path, mode, 0)
}

fn mkdir_all_depth(root: &Path, path: &Path, mode: u32, depth: u32) -> io::Result<()> {
    if depth > 40 {
        return Err(io::Error::other(format!(
            "{}: too many levels of symbolic links",
            path.display()
        )));
    }
    let rootfd = open_root(root)?;
    let mut dir = openat_in_root(&rootfd, Path::new("."), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
    let mut walked = std::path::PathBuf::new();
    for comp in relative(path).components() {
        match comp {
            Component::Normal(name) => {
                walked.push(name);
                match openat_in_root(&rootfd, &walked, OFlag::O_PATH | OFlag::O_DIRECTORY) {
                    Ok(fd) => dir = fd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        match mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode)) {
                            Ok(()) => {}
                            Err(nix::errno::Errno::EEXIST) => {
                                // A dangling symlink: create its target, inside the root.
                                if let Ok(target) =
                                    nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)
                                {
                                    let t = Path::new(&target);
                                    let t = if t.is_absolute() {
                                        t.to_path_buf()
                                    } else {
                                        Path::new("/")
                                            .join(walked.parent().unwrap_or(Path::new("")))
                                            .join(t)
                                    };
                                    mkdir_all_depth(root, &t, mode, depth + 1)?;
                                }
                            }
                            Err(e) => {
                                return Err(io::Error::other(format!(
                                    "mkdir {}: {e}",
                                    walked.display()
                                )))
                            }
                        }
                        dir = openat_in_root(&rootfd, &walked, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{}: {e}", walked.display()),
                        ))
                    }
                }
            }
            Component::ParentDir => {
                walked.pop();
                dir = openat_in_root(&rootfd, &walked, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates an empty file at `path` inside the rootfs if nothing exists there (a mount
/// point for a file bind mount); parents are created as directories.
pub fn create_file_in_root(root: &Path, path: &Path) -> io::Result<()> {
    if exists_in_root(root, path)? {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_all_in_root(root, parent, 0o755)?;
    }
    let rootfd = open_root(root)?;
    match openat_in_root(
        &rootfd,
        relative(path),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

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

/// Reads a file of the container's filesystem, `None` when it does not exist.
pub fn read_in_root(root: &Path, path: &Path) -> io::Result<Option<Vec<u8>>> {
    let rootfd = open_root(root)?;
    match openat_in_root(&rootfd, relative(path), OFlag::O_RDONLY) {
        Ok(fd) => {
            let mut buf = Vec::new();
            File::from(fd).read_to_end(&mut buf)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
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

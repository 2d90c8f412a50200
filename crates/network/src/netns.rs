//! Named, persistent network namespaces.
//!
//! A namespace lives as long as something references it; we keep it alive by bind-mounting its
//! nsfs handle onto an empty file (the scheme `ip netns add` uses), so any process — a container's
//! init, a CNI plugin, `nsenter --net=PATH` — can join it by path, and it survives daemon restarts.
//!
//! The namespace is created on a dedicated short-lived thread: `unshare(CLONE_NEWNET)` only moves
//! the calling thread, so the daemon's other threads (and the tokio runtime) never change namespace,
//! and the thread ends right after the bind mount, dropping its own reference.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{NetworkError, Result};

/// Make `dir` a shared mount point (bind-mounting it onto itself if it is not a mount point yet),
/// so namespace mounts made later propagate to mount namespaces cloned from ours (container shims)
/// and, more importantly, their unmounts propagate too and do not keep namespaces alive.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| NetworkError::io("creating netns directory", dir, e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| netns_err(dir, "bind-mounting the directory onto itself", e))?;
            mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
                .map_err(|e| netns_err(dir, "making the directory a shared mount", e))
        }
        Err(e) => Err(netns_err(dir, "making the directory a shared mount", e)),
    }
}

/// Create the namespace `dir/name`, with its loopback interface up, and return its path.
/// Fails if a namespace of that name already exists.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| NetworkError::io("creating netns directory", dir, e))?;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| NetworkError::io("creating netns mount point", &path, e))?;

    let target = path.clone();
    let outcome = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| netns_err(&target, "unshare(CLONE_NEWNET)", e))?;
            loopback_up().map_err(|e| NetworkError::Netns {
                path: target.clone(),
                reason: format!("bringing lo up: {e}"),
            })?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| netns_err(&target, "bind-mounting /proc/thread-self/ns/net", e))
        })
        .map_err(|e| NetworkError::io("spawning the netns-create thread for", &path, e))?
        .join();
    let failure = match outcome {
        Ok(Ok(())) => return Ok(path),
        Ok(Err(e)) => e,
        Err(_) => NetworkError::Netns {
            path: path.clone(),
            reason: "the netns-create thread panicked".to_string(),
        },
    };
    let _ = fs::remove_file(&path);
    Err(failure)
}

/// Unmount and remove a namespace file. Missing or already-unmounted files are not an error, so
/// this is safe to repeat (cleanup after a crash may find half-made namespaces).
pub fn delete(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(netns_err(path, "unmounting", e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("removing netns file", path, e)),
    }
}

/// Names of the namespace files in `dir` (empty if the directory does not exist).
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetworkError::io("listing netns directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetworkError::io("listing netns directory", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `path` currently holds a network namespace (an nsfs mount), as opposed to a leftover
/// empty file from an interrupted `create`.
// The statfs f_type integer type differs between architectures, hence the cast.
#[allow(clippy::unnecessary_cast)]
pub fn is_mounted(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == NSFS_MAGIC)
        .unwrap_or(false)
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

fn netns_err(path: &Path, what: &str, e: Errno) -> NetworkError {
    NetworkError::Netns {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Set IFF_UP on `lo` in the calling thread's network namespace. Hand-written (two ioctls) rather
/// than exec'ing the CNI loopback plugin: we are already inside the new namespace here, and an
/// exec would cost a few milliseconds on every sandbox start.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked and wrapped in an OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created, valid descriptor owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into the ifreq we own; the name is NUL-terminated.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the flags member of the union was just filled in by SIOCGIFFLAGS.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

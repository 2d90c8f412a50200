//! The container's root filesystem: an overlay of the image's snapshot directories
//! (read-only lower layers, shared by every container of the image) with a per-container
//! upper and work directory. No per-container copy of the image is made.
//!
//! Layout inside the container directory: `upper/`, `work/`, `rootfs/` (the mount point).
//!
//! The kernel limits mount(2)'s option string to one page. Three ways are tried in order:
//! 1. the new mount API, adding lower layers one by one with `lowerdir+` (Linux >= 6.8):
//!    no length limit at all;
//! 2. classic mount(2) with absolute paths, when the option string fits;
//! 3. classic mount(2) from a forked child that `chdir`s into the layers' common parent
//!    and passes relative paths (only the child's working directory changes, so this is
//!    safe inside a multi-threaded daemon).
//!
//! If none fits, the error says how long the option string is and what the limit is.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub const ROOTFS_DIR: &str = "rootfs";
pub const UPPER_DIR: &str = "upper";
pub const WORK_DIR: &str = "work";

/// Longest option string mount(2) accepts (one page, including the terminating NUL).
fn page_limit() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize - 1
    } else {
        4095
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("an overlay rootfs needs at least one lower layer")]
    NoLayers,
    #[error("lower layer {0} does not exist or is not a directory")]
    MissingLayer(PathBuf),
    #[error("overlay options for {layers} layers are {len} bytes, over the kernel's limit of {limit} bytes even with relative paths; use shorter snapshot paths")]
    OptionsTooLong {
        layers: usize,
        len: usize,
        limit: usize,
    },
    #[error("mounting overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A mounted overlay rootfs.
#[derive(Debug, Clone)]
pub struct OverlayRootfs {
    pub target: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Mounts `lowers` (topmost layer FIRST, as in overlayfs' `lowerdir=`) at
/// `container_dir/rootfs`, creating `upper/` and `work/`. `read_only` mounts it read-only.
#[tracing::instrument(level = "debug", skip_all)]
pub fn mount_overlay(
    container_dir: &Path,
    lowers: &[PathBuf],
    read_only: bool,
) -> Result<OverlayRootfs, RootfsError> {
    if lowers.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    for l in lowers {
        if !l.is_dir() {
            return Err(RootfsError::MissingLayer(l.clone()));
        }
    }
    let r = OverlayRootfs {
        target: container_dir.join(ROOTFS_DIR),
        upper: container_dir.join(UPPER_DIR),
        work: container_dir.join(WORK_DIR),
    };
    for d in [&r.target, &r.upper, &r.work] {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let lowers: Vec<PathBuf> = lowers
        .iter()
        .map(|l| fs::canonicalize(l).map_err(io_err(l)))
        .collect::<Result<_, _>>()?;

    let mount_err = |source| RootfsError::Mount {
        target: r.target.clone(),
        source,
    };
    match mount_with_fsconfig(&lowers, &r, read_only) {
        Ok(()) => return Ok(r),
        // Older kernels (no new mount API / no `lowerdir+`): fall back to mount(2).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {}
        Err(e) => return Err(mount_err(e)),
    }
    let abs = options_string(&lowers, &r.upper, &r.work);
    if abs.len() <= page_limit() {
        let flags = if read_only {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        mount(
            Some("overlay"),
            &r.target,
            Some("overlay"),
            flags,
            Some(abs.as_str()),
        )
        .map_err(|e| mount_err(e.into()))?;
        return Ok(r);
    }
    mount_relative(&lowers, &r, read_only)?;
    Ok(r)
}

fn options_string(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let l: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        l.join(":"),
        upper.display(),
        work.display()
    )
}

const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn fsconfig_string(fd: &OwnedFd, key: &str, value: &Path) -> io::Result<()> {
    let k = cstr(key.as_bytes())?;
    let v = cstr(value.as_os_str().as_bytes())?;
    // SAFETY: fsconfig reads two NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// New mount API: one `lowerdir+` per layer, so the page limit does not apply.
fn mount_with_fsconfig(lowers: &[PathBuf], r: &OverlayRootfs, read_only: bool) -> io::Result<()> {
    let name = cstr(b"overlay")?;
    // SAFETY: fsopen takes a NUL-terminated name; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by fsopen and is owned by nobody else.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for l in lowers {
        fsconfig_string(&fsfd, "lowerdir+", l)?;
    }
    fsconfig_string(&fsfd, "upperdir", &r.upper)?;
    fsconfig_string(&fsfd, "workdir", &r.work)?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // A real mount error (bad layer, ...) must not be mistaken for "API missing".
        return Err(if e.raw_os_error() == Some(libc::EINVAL) {
            io::Error::other(format!("overlay: {e}"))
        } else {
            e
        });
    }
    let attrs = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    // SAFETY: fsmount takes the configured fs context fd; returns a new mount fd.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: m was just returned by fsmount.
    let mfd = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let empty = cstr(b"")?;
    let target = cstr(r.target.as_os_str().as_bytes())?;
    // SAFETY: move_mount reads the NUL-terminated strings during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mfd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::other(format!(
            "move_mount: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut common: PathBuf = paths[0].parent().unwrap_or(Path::new("/")).to_path_buf();
    while !paths.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            return PathBuf::from("/");
        }
    }
    common
}

/// mount(2) with paths relative to the layers' common parent, from a forked child.
fn mount_relative(
    lowers: &[PathBuf],
    r: &OverlayRootfs,
    read_only: bool,
) -> Result<(), RootfsError> {
    let mut all: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    all.push(&r.upper);
    all.push(&r.work);
    let base = common_parent(&all);
    let rel = |p: &Path| p.strip_prefix(&base).unwrap_or(p).to_path_buf();
    let rl: Vec<PathBuf> = lowers.iter().map(|p| rel(p)).collect();
    let opts = options_string(&rl, &rel(&r.upper), &rel(&r.work));
    let limit = page_limit();
    if opts.len() > limit {
        return Err(RootfsError::OptionsTooLong {
            layers: lowers.len(),
            len: opts.len(),
            limit,
        });
    }
    // Everything the child touches is prepared before fork: it only calls chdir, mount
    // and _exit, which are async-signal-safe.
    let c_base = cstr(base.as_os_str().as_bytes()).map_err(io_err(&base))?;
    let c_target = cstr(r.target.as_os_str().as_bytes()).map_err(io_err(&r.target))?;
    let c_opts = cstr(opts.as_bytes()).map_err(io_err(&r.target))?;
    let c_type = cstr(b"overlay").map_err(io_err(&r.target))?;
    let flags: libc::c_ulong = if read_only { libc::MS_RDONLY } else { 0 };
    // SAFETY: the child only performs async-signal-safe calls on pre-built C strings.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(RootfsError::Mount {
            target: r.target.clone(),
            source: io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: see above; the child exits without returning into Rust code.
        unsafe {
            if libc::chdir(c_base.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let rc = libc::mount(
                c_type.as_ptr(),
                c_target.as_ptr(),
                c_type.as_ptr(),
                flags,
                c_opts.as_ptr() as *const libc::c_void,
            );
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
    }
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(nix::sys::wait::WaitStatus::Exited(_, errno)) => Err(RootfsError::Mount {
            target: r.target.clone(),
            source: io::Error::from_raw_os_error(errno),
        }),
        other => Err(RootfsError::Mount {
            target: r.target.clone(),
            source: io::Error::other(format!("mount helper ended with {other:?}")),
        }),
    }
}

/// Makes an already mounted rootfs read-only (used after the working directory was
/// created, for `--read-only`).
pub fn remount_read_only(target: &Path) -> Result<(), RootfsError> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| RootfsError::Mount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Whether something is mounted exactly at `path`.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split_whitespace()
            .nth(4)
            .map(|mp| unescape_mountinfo(mp) == canon.as_os_str().as_bytes())
            .unwrap_or(false)
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Unmounts `container_dir/rootfs` if mounted (lazily when busy). Idempotent.
#[tracing::instrument(level = "debug", skip_all)]
pub fn unmount(container_dir: &Path) -> Result<(), RootfsError> {
    let target = container_dir.join(ROOTFS_DIR);
    while is_mounted(&target) {
        if let Err(e) = umount2(&target, MntFlags::empty()) {
            if e == nix::errno::Errno::EBUSY {
                umount2(&target, MntFlags::MNT_DETACH).map_err(|e| RootfsError::Unmount {
                    target: target.clone(),
                    source: e.into(),
                })?;
            } else {
                return Err(RootfsError::Unmount {
                    target,
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

/// Unmounts the rootfs and deletes the whole container directory (what `rm` does after
/// the shim is gone). Refuses to delete while the rootfs is still mounted.
#[tracing::instrument(level = "debug", skip_all)]
pub fn remove(container_dir: &Path) -> Result<(), RootfsError> {
    unmount(container_dir)?;
    match fs::remove_dir_all(container_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RootfsError::Io {
            path: container_dir.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_parent_of_layers() {
        let a = Path::new("/var/lib/z/snapshots/1/fs");
        let b = Path::new("/var/lib/z/snapshots/22/fs");
        let c = Path::new("/var/lib/z/containers/x/upper");
        assert_eq!(
            common_parent(&[a, b]),
            PathBuf::from("/var/lib/z/snapshots")
        );
        assert_eq!(common_parent(&[a, b, c]), PathBuf::from("/var/lib/z"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), b"/a b".to_vec());
    }
}

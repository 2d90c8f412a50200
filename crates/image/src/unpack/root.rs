//! A directory used as a root that nothing may escape: every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so `..` and symlinks (absolute or relative) are resolved as if the
//! directory were `/`, by the kernel, race-free. All changes are then made with `*at` calls on the
//! final component relative to the resolved parent, never following a final symlink.
//!
//! Why hand-written on `libc::syscall(SYS_openat2)` rather than `pathrs`/`cap-std`: the unpacker
//! needs fd-level control over every operation (mknodat for whiteout devices, linkat without
//! following, xattrs on non-regular files, deferred directory mtimes) and caches the parent
//! directory fd between consecutive tar entries, which is the hot path of a pull. The unsafe
//! surface is the one syscall plus thin libc wrappers, each with its safety argument.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An open directory that acts as `/` for path resolution.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens `path` (trusted: chosen by our caller, not by an archive).
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let c = cstring(path.as_os_str())?;
        let fd = openat_raw(
            libc::AT_FDCWD,
            &c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (relative, already normalised) beneath the root; the empty path is the root.
    pub(crate) fn resolve(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let c = if rel.as_os_str().is_empty() {
            CString::new(".").expect("no NUL in a literal")
        } else {
            cstring(rel.as_os_str())?
        };
        openat2_in_root(self.fd.as_raw_fd(), &c, flags | libc::O_CLOEXEC)
    }

    /// Opens directory `rel` for use as a `*at` dirfd.
    pub(crate) fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.resolve(rel, libc::O_PATH | libc::O_DIRECTORY)
    }

    /// Splits `rel` into (parent dir fd, final name) without creating anything.
    pub(crate) fn parent_of(&self, rel: &Path) -> io::Result<(OwnedFd, CString)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no final name"))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        Ok((self.open_dir(parent)?, cstring(name)?))
    }
}

/// `openat2(dirfd, path, {flags, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS})`.
fn openat2_in_root(dirfd: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain C struct; all-zero is a valid value (fields set below).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = 0;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `path` is a valid NUL-terminated string and `how` a valid open_how whose size
        // we pass; the kernel only reads both. The returned fd is fresh and owned by us.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: r is a new fd returned by the kernel, owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a concurrent rename in the tree; the kernel asks us to retry.
        if e.kind() != io::ErrorKind::Interrupted && e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

/// Plain `openat(2)` of one name relative to a directory fd.
pub(crate) fn openat_raw(
    dirfd: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: valid C string; flags/mode are plain integers; the fd returned is ours.
        let r = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if r >= 0 {
            // SAFETY: fresh fd from the kernel.
            return Ok(unsafe { OwnedFd::from_raw_fd(r) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub(crate) fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {:?} contains a NUL byte", s),
        )
    })
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`; `Ok(None)` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out pointer for the duration of the call.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

pub(crate) fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid fd and C string; unlinkat never follows the final component.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid C strings and fd.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// `linkat` without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself, as tar means.
pub(crate) fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: valid fds and C strings.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

pub(crate) fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

pub(crate) fn lchown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd and C string; AT_SYMLINK_NOFOLLOW changes a symlink itself.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// chmod of a just-created device node or FIFO named `name` in `dir` (never a symlink: we
/// created it ourselves an instant ago, in a tree only this unpacker writes).
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, t: libc::timespec) -> io::Result<()> {
    let times = [t, t];
    // SAFETY: valid fd; `times` is a 2-element array as futimens requires.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

pub(crate) fn lutimens_at(dir: BorrowedFd<'_>, name: &CStr, t: libc::timespec) -> io::Result<()> {
    let times = [t, t];
    // SAFETY: valid fd, C string and 2-element times array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// The `/proc/self/fd/<dirfd>/<name>` path naming `name` in an open directory. Used for the
/// calls that have no `*at` form (xattrs): the magic link resolves to exactly our directory, and
/// the final component is then used with the non-following `l*` variant.
fn proc_path(dir: BorrowedFd<'_>, name: Option<&CStr>) -> io::Result<CString> {
    let mut s = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        s.push(b'/');
        s.extend_from_slice(n.to_bytes());
    }
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, C string and buffer of the given length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets an xattr on `name` in `dir` without following it if it is a symlink; with `name` None,
/// on the directory `dir` itself (which may be an O_PATH fd).
pub(crate) fn setxattr_at(
    dir: BorrowedFd<'_>,
    name: Option<&CStr>,
    key: &CStr,
    value: &[u8],
) -> io::Result<()> {
    let p = proc_path(dir, name)?;
    // SAFETY: valid C strings and buffer. With a name, lsetxattr does not follow the final
    // component; without, setxattr follows only the /proc magic link to our own directory.
    check(unsafe {
        if name.is_some() {
            libc::lsetxattr(
                p.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        } else {
            libc::setxattr(
                p.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    })
}

/// All xattrs of an open file (for copy-up of a hardlink target from a lower layer).
pub(crate) fn fxattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: valid fd and buffer of the given length.
        let r = unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for key in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let mut val = vec![0u8; 256];
        loop {
            // SAFETY: valid fd, C string and buffer.
            let r = unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    key.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            if r >= 0 {
                val.truncate(r as usize);
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                val.resize(val.len() * 16, 0);
            } else {
                return Err(e);
            }
        }
        out.push((key, val));
    }
    Ok(out)
}

pub(crate) fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid fd, C string and buffer of the given length.
    let r = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    CString::new(buf).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, never following
/// symlinks (each level is opened with O_NOFOLLOW relative to its parent's fd).
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return match unlink_at(dir, name, 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        };
    }
    let sub = openat_raw(
        dir.as_raw_fd(),
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    clear_dir(sub.as_fd(), |_| false)?;
    match unlink_at(dir, name, libc::AT_REMOVEDIR) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Removes every entry of the open directory `dir` for which `keep(name)` is false.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>, keep: impl Fn(&OsStr) -> bool) -> io::Result<()> {
    for name in list_dir(dir)? {
        if keep(OsStr::from_bytes(name.to_bytes())) {
            continue;
        }
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// The names in an open directory (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // Reopen: readdir needs a readable fd of its own (dir may be O_PATH), and owning it lets
    // `nix::dir::Dir` close it.
    let fd = openat_raw(dir.as_raw_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let d = nix::dir::Dir::from_fd(fd.as_raw_fd()).map_err(io::Error::from)?;
    std::mem::forget(fd); // now owned by `d`
    let mut out = Vec::new();
    for entry in d.into_iter() {
        let entry = entry.map_err(io::Error::from)?;
        let n = entry.file_name();
        if n == c"." || n == c".." {
            continue;
        }
        out.push(n.to_owned());
    }
    Ok(out)
}

//! Reading out of a container's root filesystem as a tar (`cp CONTAINER:PATH ...`), contained
//! the same way [`super::apply_layer`] is: the requested path is resolved by the kernel beneath
//! the root with `RESOLVE_IN_ROOT` (see [`super::root`]), and the walk below it opens every
//! entry with `*at` calls on one name relative to its parent's fd, never following a symlink.
//! A symlink in the container (absolute, `../..`, to `/etc/shadow`) is archived as a symlink;
//! only the top path may be followed (`cp -L`), and then still inside the root.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::root::{self, Root};

/// What a path inside the root is, as `cp` needs to know it before copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// The last component of the requested path (`/` for the root itself).
    pub name: String,
    /// File type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// The symlink's target when the path is a symlink (and was not followed).
    pub link_target: Option<String>,
}

impl PathStat {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// The path relative to the root, as `openat2` takes it: leading `/` dropped, empty for the
/// root itself. `..` is left to the kernel, which clamps it at the root.
fn relative(path: &Path) -> PathBuf {
    let s = path.as_os_str().as_bytes();
    let trimmed: &[u8] = {
        let mut i = 0;
        while i < s.len() && s[i] == b'/' {
            i += 1;
        }
        &s[i..]
    };
    PathBuf::from(OsStr::from_bytes(trimmed))
}

/// The name the top entry gets in the archive: the path's last component (`.` for the root,
/// or for a path ending in `.` / `..`, whose contents the client places itself).
fn top_name(path: &Path) -> String {
    match path.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => ".".to_string(),
    }
}

/// Opens the requested path beneath `root` as an `O_PATH` fd, following a final symlink only
/// when `follow` (and then inside the root too).
fn open_top(root: &Root, rel: &Path, follow: bool) -> io::Result<OwnedFd> {
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    root.resolve(rel, libc::O_PATH | nofollow)
}

/// Describes `path` inside the root directory `root_dir`.
pub fn stat_in_root(root_dir: &Path, path: &Path, follow: bool) -> io::Result<PathStat> {
    let root = Root::open(root_dir)?;
    let rel = relative(path);
    let fd = open_top(&root, &rel, follow)?;
    let st = root::fstat(fd.as_fd())?;
    let link_target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        // An O_PATH fd of the symlink itself: readlinkat with the empty name reads it.
        Some(String::from_utf8_lossy(root::readlink_at(fd.as_fd(), c"")?.to_bytes()).into_owned())
    } else {
        None
    };
    let name = if rel.as_os_str().is_empty() {
        "/".to_string()
    } else {
        top_name(&rel)
    };
    Ok(PathStat {
        name,
        mode: st.st_mode,
        size: st.st_size as u64,
        mtime: st.st_mtime,
        link_target,
    })
}

/// Opens directory `path` inside `root_dir` (symlinks followed, inside the root), for use as
/// the root of an [`super::apply_layer`] that must stay beneath it.
pub fn open_dir_in_root(root_dir: &Path, path: &Path) -> io::Result<OwnedFd> {
    let root = Root::open(root_dir)?;
    root.resolve(&relative(path), libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Writes `path` inside `root_dir` (a directory recursively) to `out` as a tar whose top entry
/// is named after the path's last component. Returns what was archived at the top.
pub fn write_tar_in_root(
    root_dir: &Path,
    path: &Path,
    follow: bool,
    out: impl Write,
) -> io::Result<PathStat> {
    let stat = stat_in_root(root_dir, path, follow)?;
    let root = Root::open(root_dir)?;
    let rel = relative(path);
    let top = open_top(&root, &rel, follow)?;
    let mut builder = tar::Builder::new(out);
    let name = PathBuf::from(top_name(&rel));
    let st = root::fstat(top.as_fd())?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let dir = reopen(top.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            append_dir(&mut builder, dir.as_fd(), &name, &st)?;
        }
        libc::S_IFREG => {
            let file = reopen(top.as_fd(), libc::O_RDONLY | libc::O_NONBLOCK)?;
            append_file(&mut builder, File::from(file), &name, &st)?;
        }
        libc::S_IFLNK => {
            let target = root::readlink_at(top.as_fd(), c"")?;
            append_symlink(&mut builder, &name, &target, &st)?;
        }
        _ => append_special(&mut builder, &name, &st)?,
    }
    builder.into_inner()?.flush()?;
    Ok(stat)
}

/// Reopens an `O_PATH` fd for reading through its own inode (`/proc/self/fd`), not by name,
/// so what was checked is what is read.
fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("no NUL in a formatted number");
    root::openat_raw(libc::AT_FDCWD, &path, flags, 0)
}

fn header(st: &libc::stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(size);
    h
}

fn append_dir<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &Path,
    st: &libc::stat,
) -> io::Result<()> {
    let mut h = header(st, tar::EntryType::Directory, 0);
    b.append_data(&mut h, name, io::empty())?;
    if is_kernel_fs(dir)? {
        return Ok(());
    }
    let mut names = root::list_dir(dir)?;
    names.sort();
    for child in names {
        append_child(
            b,
            dir,
            &child,
            &name.join(OsStr::from_bytes(child.to_bytes())),
        )?;
    }
    Ok(())
}

/// One entry of a directory being archived, opened relative to the directory's fd with
/// `O_NOFOLLOW`: a symlink is archived as one, never followed.
fn append_child<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    child: &CStr,
    name: &Path,
) -> io::Result<()> {
    let Some(st) = root::lstat_at(dir, child)? else {
        return Ok(()); // removed since the listing
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let fd = root::openat_raw(
                dir_raw(dir),
                child,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            let st = root::fstat(fd.as_fd())?;
            append_dir(b, fd.as_fd(), name, &st)
        }
        libc::S_IFREG => {
            // O_NONBLOCK: if the name was swapped for a FIFO since the lstat, the open does
            // not hang; the fstat below then refuses it.
            let fd = root::openat_raw(
                dir_raw(dir),
                child,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                0,
            )?;
            let st = root::fstat(fd.as_fd())?;
            append_file(b, File::from(fd), name, &st)
        }
        libc::S_IFLNK => {
            let target = root::readlink_at(dir, child)?;
            append_symlink(b, name, &target, &st)
        }
        libc::S_IFSOCK => Ok(()), // not archivable, as in tar(1)
        _ => append_special(b, name, &st),
    }
}

/// Whether `dir` is on a kernel filesystem (a running container's /proc, /sys, cgroups, ...):
/// its files are not data (sizes that lie, endless or side-effecting reads), so the directory is
/// archived empty, as the mount point it is in the container's image.
// The magic numbers' and f_type's widths differ between architectures: the casts are needed.
#[allow(clippy::unnecessary_cast)]
fn is_kernel_fs(dir: BorrowedFd<'_>) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: zeroed statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    const KERNEL_FS: &[i64] = &[
        libc::PROC_SUPER_MAGIC as i64,
        libc::SYSFS_MAGIC as i64,
        libc::CGROUP_SUPER_MAGIC as i64,
        libc::CGROUP2_SUPER_MAGIC as i64,
        libc::DEVPTS_SUPER_MAGIC as i64,
        0x1980_0202, // mqueue (not in libc)
        libc::SECURITYFS_MAGIC as i64,
        libc::DEBUGFS_MAGIC as i64,
        libc::TRACEFS_MAGIC as i64,
        libc::BPF_FS_MAGIC as i64,
    ];
    let kind = st.f_type as i64;
    Ok(KERNEL_FS.contains(&kind))
}

fn dir_raw(dir: BorrowedFd<'_>) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    dir.as_raw_fd()
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    file: File,
    name: &Path,
    st: &libc::stat,
) -> io::Result<()> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed type while being copied", name.display()),
        ));
    }
    let size = st.st_size as u64;
    let mut h = header(st, tar::EntryType::Regular, size);
    // Exactly `size` bytes: a file growing meanwhile must not corrupt the archive, and one
    // shrinking fails the copy (the tar writer would otherwise pad short data silently).
    let mut data = Exact {
        inner: io::Read::take(file, size),
        left: size,
        name,
    };
    b.append_data(&mut h, name, &mut data)
}

/// Reads exactly `left` bytes, failing at an early end.
struct Exact<'a, R> {
    inner: R,
    left: u64,
    name: &'a Path,
}

impl<R: io::Read> io::Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being copied", self.name.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn append_symlink<W: Write>(
    b: &mut tar::Builder<W>,
    name: &Path,
    target: &CStr,
    st: &libc::stat,
) -> io::Result<()> {
    let mut h = header(st, tar::EntryType::Symlink, 0);
    let target = target.to_bytes();
    // The target verbatim when it fits the header: `append_link` rewrites it as a path
    // (`/` came out as `//`); longer ones need its GNU long-link entry.
    if target.len() <= 100 {
        h.set_link_name_literal(target)?;
        b.append_data(&mut h, name, io::empty())
    } else {
        b.append_link(&mut h, name, OsStr::from_bytes(target))
    }
}

fn append_special<W: Write>(
    b: &mut tar::Builder<W>,
    name: &Path,
    st: &libc::stat,
) -> io::Result<()> {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFCHR => tar::EntryType::Char,
        libc::S_IFBLK => tar::EntryType::Block,
        libc::S_IFIFO => tar::EntryType::Fifo,
        _ => return Ok(()),
    };
    let mut h = header(st, kind, 0);
    h.set_device_major(libc::major(st.st_rdev))?;
    h.set_device_minor(libc::minor(st.st_rdev))?;
    b.append_data(&mut h, name, io::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(tar_bytes: &[u8]) -> Vec<(String, Option<String>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                (e.path().unwrap().to_string_lossy().into_owned(), link)
            })
            .collect()
    }

    #[test]
    fn a_symlink_to_outside_is_resolved_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/secret"), "container file").unwrap();
        // Absolute and ../.. symlinks that would reach the host's file outside the root.
        symlink(outside.path().join("secret"), root.path().join("abs")).unwrap();
        symlink("../../../../../etc/secret", root.path().join("rel")).unwrap();
        symlink("/", root.path().join("up")).unwrap();
        // Followed (-L): still inside the root.
        let mut out = Vec::new();
        let err = write_tar_in_root(root.path(), Path::new("/abs"), true, &mut out);
        assert!(err.is_err(), "the host path does not exist inside the root");
        let mut out = Vec::new();
        write_tar_in_root(root.path(), Path::new("/rel"), true, &mut out).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut e, &mut s).unwrap();
        assert_eq!(s, "container file");
        // Not followed: archived as symlinks, and a directory walk does not descend into them.
        let mut out = Vec::new();
        write_tar_in_root(root.path(), Path::new("/"), false, &mut out).unwrap();
        let n = names(&out);
        assert!(
            n.iter()
                .any(|(p, l)| p == "up" && l.as_deref() == Some("/")),
            "{n:?}"
        );
        assert!(!n.iter().any(|(p, _)| p.starts_with("up/")), "{n:?}");
        // A path through a symlink resolves inside: /up/etc/secret is the container's.
        let st = stat_in_root(root.path(), Path::new("/up/etc/secret"), false).unwrap();
        assert_eq!(st.size, "container file".len() as u64);
    }

    #[test]
    fn a_file_path_with_a_trailing_slash_is_not_a_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "x").unwrap();
        let e = stat_in_root(root.path(), Path::new("/f/"), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        let e = stat_in_root(root.path(), Path::new("/missing"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}

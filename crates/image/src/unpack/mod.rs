//! Applying a layer tar to a directory: the pull benchmark's hot path and the place hostile
//! archives are contained.
//!
//! Every path in the archive is normalised lexically (`..` clamps at the root, leading `/` is
//! dropped) and then resolved by the kernel beneath the target with `RESOLVE_IN_ROOT` (see
//! [`root`]), so symlinks planted by the archive resolve inside the target as they would inside
//! the container. Changes are made with `*at` calls on the final component, never following it.
//! Nothing outside the target directory is ever created, changed or removed.
//!
//! Two whiteout modes: [`WhiteoutMode::Overlay`] stores whiteouts the way overlayfs reads them
//! (a 0:0 character device for a deleted name, `trusted.overlay.opaque=y` on an opaque
//! directory), so the snapshots of a chain can be stacked as overlay lowerdirs;
//! [`WhiteoutMode::Apply`] deletes, for flattening a chain into one plain directory.

pub(crate) mod chain;
pub mod export;
mod links;
mod meta;
mod root;
mod space;
#[cfg(test)]
pub(crate) mod tests;
mod whiteout;

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use meta::Meta;
use root::Root;
pub use space::{SpaceGuard, SpaceRefusal};

/// The prefix tar layers use to mark a deleted name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name marking a directory opaque (lower layers' children hidden).
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What to do with whiteout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Store them as overlayfs whiteouts (snapshots that are stacked by an overlay mount).
    Overlay,
    /// Delete the named files (flattening layers into one directory).
    Apply,
}

/// How to apply a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Upper bound on the bytes of file data written (tar-bomb limit).
    pub max_bytes: u64,
    /// Upper bound on the number of entries.
    pub max_entries: u64,
    /// Overlay mode only: the fs directories of the layers below this one, nearest first. A
    /// hardlink to a file of a lower layer is copied up from here, and a parent directory the
    /// tar does not list is created with the attributes it has below (so the merged view keeps
    /// e.g. `/tmp`'s 1777 instead of a default 0755).
    pub lower_dirs: Vec<PathBuf>,
    /// chown entries to the archive's uid/gid (needs root).
    pub preserve_owner: bool,
    /// `syncfs` once at the end, so a committed snapshot survives a crash.
    pub sync: bool,
    /// Overlay mode: instead of failing on a hardlink whose target is in no layer given in
    /// `lower_dirs`, and instead of leaving implicit parent directories at 0755 root, record
    /// them in [`ApplyStats::deferred`] for [`apply_deferred`] to finish once the lower
    /// snapshots exist. This lets the layers of one image be unpacked in parallel.
    pub defer_lower: bool,
    /// The free-space floor and image size cap, shared by all layers of one image (None: no
    /// checks beyond `max_bytes`).
    pub space: Option<std::sync::Arc<SpaceGuard>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            whiteouts: WhiteoutMode::Overlay,
            max_bytes: 64 << 30,
            max_entries: 10_000_000,
            lower_dirs: Vec::new(),
            preserve_owner: true,
            sync: true,
            defer_lower: false,
            space: None,
        }
    }
}

/// What applying a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    /// Bytes of regular-file data written.
    pub bytes: u64,
    pub whiteouts: u64,
    /// Hardlinks to files of lower layers, materialised as copies.
    pub copied_up: u64,
    /// xattrs the filesystem refused (ENOTSUP) or that are not allowed from a layer
    /// (`trusted.overlay.*` in overlay mode, which would steer overlayfs).
    pub skipped_xattrs: u64,
    /// Entries of types that have no meaning in a root filesystem (e.g. PAX global headers).
    pub skipped_entries: u64,
    /// Work left for [`apply_deferred`] (only with [`ApplyOptions::defer_lower`]).
    pub deferred: Deferred,
}

/// What a layer applied with [`ApplyOptions::defer_lower`] still needs from the layers below.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deferred {
    /// Directories the layer created implicitly (its tar did not list them).
    pub implicit_dirs: Vec<PathBuf>,
    /// Hardlinks (path, target) whose target is not in this layer.
    pub links: Vec<(PathBuf, PathBuf)>,
}

impl Deferred {
    pub fn is_empty(&self) -> bool {
        self.implicit_dirs.is_empty() && self.links.is_empty()
    }
}

/// Why a layer could not be applied. Entry errors name the path inside the layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("open unpack target {path}: {source}")]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?}: {op}: {source}")]
    Entry {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "layer entry {path:?}: unpacked data would exceed the limit of {limit} bytes (tar bomb?)"
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("layer has more than {limit} entries (tar bomb?)")]
    TooManyEntries { limit: u64 },
    #[error("layer entry {path:?}: {refusal}")]
    NoSpace {
        path: PathBuf,
        refusal: SpaceRefusal,
    },
}

pub type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// Applies the layer tar `tar` on top of `target_dir`. See the module docs for the rules.
pub fn apply_layer(target_dir: &Path, tar: impl Read, opts: &ApplyOptions) -> Result<ApplyStats> {
    let mut applier = Applier::new(target_dir, opts)?;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        applier.stats.entries += 1;
        if applier.stats.entries > opts.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: opts.max_entries,
            });
        }
        applier.entry(&mut entry)?;
    }
    applier.finish()?;
    Ok(applier.stats)
}

/// Finishes a layer applied with [`ApplyOptions::defer_lower`] now that its lower snapshots
/// exist: copies up the hardlinks into lower layers and gives implicit directories the
/// attributes they have below. `opts.lower_dirs` must list the lower fs dirs, nearest first.
pub fn apply_deferred(
    target_dir: &Path,
    deferred: &Deferred,
    opts: &ApplyOptions,
) -> Result<ApplyStats> {
    let opts = ApplyOptions {
        defer_lower: false,
        whiteouts: WhiteoutMode::Overlay,
        ..opts.clone()
    };
    let mut applier = Applier::new(target_dir, &opts)?;
    for dir in &deferred.implicit_dirs {
        let fd = match applier
            .root
            .resolve(dir, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        {
            Ok(fd) => fd,
            // Replaced later in the same layer (e.g. by a whiteout): nothing to inherit.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                ) =>
            {
                continue
            }
            Err(e) => return Err(applier.err(dir, "open implicit directory")(e)),
        };
        applier.inherit_lower_attrs(dir, fd.as_fd(), dir)?;
    }
    for (path, target) in &deferred.links {
        applier.copy_up(path, target)?;
    }
    applier.finish()?;
    Ok(applier.stats)
}

struct Applier<'a> {
    root: Root,
    lowers: Vec<Root>,
    opts: &'a ApplyOptions,
    /// The last parent directory used, by relative path: consecutive entries usually share it.
    /// Dropped whenever anything is removed or replaced, since that can change what the path
    /// resolves to.
    parent_cache: Option<(PathBuf, Rc<OwnedFd>)>,
    /// Directory mtimes, applied at the end because creating children changes them.
    dir_times: Vec<(PathBuf, libc::timespec)>,
    /// Apply mode: paths this layer created, which an opaque whiteout must keep.
    created: HashSet<PathBuf>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

/// Lexically normalises an archive path: drops `/`, `.`, and clamps `..` at the root.
pub(crate) fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl<'a> Applier<'a> {
    fn new(target_dir: &Path, opts: &'a ApplyOptions) -> Result<Self> {
        let root = Root::open(target_dir).map_err(|source| UnpackError::Target {
            path: target_dir.to_path_buf(),
            source,
        })?;
        let mut lowers = Vec::new();
        if opts.whiteouts == WhiteoutMode::Overlay {
            for dir in &opts.lower_dirs {
                lowers.push(Root::open(dir).map_err(|source| UnpackError::Target {
                    path: dir.clone(),
                    source,
                })?);
            }
        }
        Ok(Self {
            root,
            lowers,
            opts,
            parent_cache: None,
            dir_times: Vec::new(),
            created: HashSet::new(),
            stats: ApplyStats::default(),
            buf: vec![0u8; 1 << 20],
        })
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let path = normalise(&raw);
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            self.stats.skipped_entries += 1;
            return Ok(());
        }
        // Whiteouts are recognised by name, whatever their type.
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name == OPAQUE_WHITEOUT {
                return self.opaque(&path);
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                if hidden.starts_with(".wh.") {
                    // aufs bookkeeping (.wh..wh.plnk etc.): meaningless here.
                    self.stats.skipped_entries += 1;
                    return Ok(());
                }
                return self.whiteout(&raw, &path, hidden);
            }
        }
        let meta = self.meta(entry, &path)?;
        if path.as_os_str().is_empty() {
            // The archive's "./": attributes of the root directory itself.
            if kind == T::Directory {
                let fd = self
                    .root
                    .resolve(Path::new(""), libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(self.err(&path, "open root"))?;
                self.set_meta_fd(fd.as_fd(), &path, &meta)?;
                self.dir_times.push((path, meta.mtime));
            } else {
                self.stats.skipped_entries += 1;
            }
            return Ok(());
        }
        if self.opts.whiteouts == WhiteoutMode::Apply {
            self.created.insert(path.clone());
        }
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => self.file(entry, &path, &meta),
            T::Directory => self.dir(&path, &meta),
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.invalid(&path, "symlink without a target"))?;
                self.symlink(&path, &target, &meta)
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .ok_or_else(|| self.invalid(&path, "hardlink without a target"))?;
                let target = normalise(&target);
                self.hardlink(&path, &target)
            }
            T::Char | T::Block | T::Fifo => {
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                self.node(&path, fmt, libc::makedev(major, minor), &meta)
            }
            _ => {
                self.stats.skipped_entries += 1;
                Ok(())
            }
        }
    }

    /// True while applying with `defer_lower` (the lowers are not available yet).
    fn deferring(&self) -> bool {
        self.opts.defer_lower && self.opts.whiteouts == WhiteoutMode::Overlay
    }

    /// Checks the free-space floor and the image size cap before writing `size` bytes.
    fn reserve_space(&self, dir: BorrowedFd<'_>, path: &Path, size: u64) -> Result<()> {
        match &self.opts.space {
            Some(guard) => guard
                .reserve(dir, size)
                .map_err(|refusal| UnpackError::NoSpace {
                    path: path.to_path_buf(),
                    refusal,
                }),
            None => Ok(()),
        }
    }

    fn err<'p>(
        &self,
        path: &'p Path,
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> UnpackError + 'p {
        move |source| UnpackError::Entry {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    fn invalid(&self, path: &Path, reason: &str) -> UnpackError {
        UnpackError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    /// The parent directory of `path`, created (with attributes from a lower layer when there
    /// is one) if the archive did not list it.
    fn parent(&mut self, path: &Path) -> Result<(Rc<OwnedFd>, CString)> {
        let parent = path.parent().unwrap_or(Path::new(""));
        let name = path
            .file_name()
            .ok_or_else(|| self.invalid(path, "no file name"))?;
        let name = root::cstring(name).map_err(self.err(path, "name"))?;
        if let Some((p, fd)) = &self.parent_cache {
            if p == parent {
                return Ok((fd.clone(), name));
            }
        }
        let fd = Rc::new(self.mkdir_all(parent, path)?);
        self.parent_cache = Some((parent.to_path_buf(), fd.clone()));
        Ok((fd, name))
    }

    fn mkdir_all(&mut self, dir: &Path, entry: &Path) -> Result<OwnedFd> {
        match self.root.open_dir(dir) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.err(entry, "open parent directory")(e)),
        }
        // Walk down, creating what is missing. Each step is resolved from the root again, so
        // a symlink met on the way is still confined.
        let mut cur = self
            .root
            .open_dir(Path::new(""))
            .map_err(self.err(entry, "open root"))?;
        let mut prefix = PathBuf::new();
        // Below a directory we just created nothing exists yet, so probing from the root
        // again (quadratic in depth for a hostile deep path) is unnecessary.
        let mut fresh = false;
        for comp in dir.components() {
            prefix.push(comp);
            if !fresh {
                match self.root.open_dir(&prefix) {
                    Ok(fd) => {
                        cur = fd;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(self.err(entry, "open parent directory")(e)),
                }
            }
            fresh = true;
            let name = root::cstring(comp.as_os_str()).map_err(self.err(entry, "name"))?;
            match root::mkdir_at(cur.as_fd(), &name, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    return Err(self.invalid(
                        entry,
                        &format!(
                            "cannot create parent directory {prefix:?}: a dangling symlink or other non-directory is in the way"
                        ),
                    ))
                }
                Err(e) => return Err(self.err(entry, "create parent directory")(e)),
            }
            let fd = root::openat_raw(
                cur.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(self.err(entry, "open created parent directory"))?;
            self.inherit_lower_attrs(&prefix, fd.as_fd(), entry)?;
            if self.opts.whiteouts == WhiteoutMode::Apply {
                self.created.insert(prefix.clone());
            }
            cur = fd;
        }
        Ok(cur)
    }

    /// Gives an implicitly created directory the owner, mode, xattrs and mtime it has in the
    /// nearest lower layer, so the overlay's merged view does not change it.
    fn inherit_lower_attrs(&mut self, rel: &Path, fd: BorrowedFd<'_>, entry: &Path) -> Result<()> {
        if self.deferring() {
            self.stats.deferred.implicit_dirs.push(rel.to_path_buf());
            return Ok(());
        }
        for lower in &self.lowers {
            let Ok(lfd) = lower.resolve(rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            else {
                continue;
            };
            let st = root::fstat(lfd.as_fd()).map_err(self.err(entry, "stat lower directory"))?;
            if self.opts.preserve_owner {
                root::fchown(fd, st.st_uid, st.st_gid).map_err(self.err(entry, "chown"))?;
            }
            root::fchmod(fd, st.st_mode & 0o7777).map_err(self.err(entry, "chmod"))?;
            for (k, v) in root::fxattrs(lfd.as_fd()).unwrap_or_default() {
                if k.to_bytes().starts_with(b"trusted.overlay.") {
                    continue;
                }
                let _ = root::fsetxattr(fd, &k, &v);
            }
            self.dir_times.push((
                rel.to_path_buf(),
                libc::timespec {
                    tv_sec: st.st_mtime,
                    tv_nsec: st.st_mtime_nsec,
                },
            ));
            return Ok(());
        }
        Ok(())
    }

    /// Makes room for a new non-directory at `name`: removes whatever is there (a directory
    /// with all its content). Returns whether something was removed.
    fn clear_slot(&mut self, dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<()> {
        root::remove_all_at(dir, name).map_err(self.err(path, "remove existing entry"))
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        meta: &Meta,
    ) -> Result<()> {
        let size = entry.size();
        if self.stats.bytes.saturating_add(size) > self.opts.max_bytes {
            return Err(UnpackError::TooLarge {
                path: path.to_path_buf(),
                limit: self.opts.max_bytes,
            });
        }
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let (dir, name) = self.parent(path)?;
        self.reserve_space(dir.as_fd(), path, size)?;
        let fd = match root::openat_raw(dir.as_raw_fd(), &name, flags, 0o600) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                // Something is there: replace it.
                self.parent_cache = None;
                self.clear_slot(dir.as_fd(), &name, path)?;
                root::openat_raw(dir.as_raw_fd(), &name, flags, 0o600)
                    .map_err(self.err(path, "create file"))?
            }
            Err(e) => return Err(self.err(path, "create file")(e)),
        };
        let mut file = std::fs::File::from(fd);
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(path, "read file data from the layer")(e)),
            };
            written += n as u64;
            if self.stats.bytes + written > self.opts.max_bytes {
                return Err(UnpackError::TooLarge {
                    path: path.to_path_buf(),
                    limit: self.opts.max_bytes,
                });
            }
            file.write_all(&self.buf[..n])
                .map_err(self.err(path, "write file"))?;
        }
        self.stats.bytes += written;
        self.set_meta_fd(file.as_fd(), path, meta)?;
        root::futimens(file.as_fd(), meta.mtime).map_err(self.err(path, "set mtime"))?;
        Ok(())
    }

    fn dir(&mut self, path: &Path, meta: &Meta) -> Result<()> {
        let (dir, name) = self.parent(path)?;
        let existing = root::lstat_at(dir.as_fd(), &name).map_err(self.err(path, "stat"))?;
        match existing {
            Some(st) if root::is_dir(&st) => {}
            Some(_) => {
                self.parent_cache = None;
                self.clear_slot(dir.as_fd(), &name, path)?;
                root::mkdir_at(dir.as_fd(), &name, 0o700).map_err(self.err(path, "mkdir"))?;
            }
            None => root::mkdir_at(dir.as_fd(), &name, 0o700).map_err(self.err(path, "mkdir"))?,
        }
        let fd = root::openat_raw(
            dir.as_raw_fd(),
            &name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(self.err(path, "open directory"))?;
        self.set_meta_fd(fd.as_fd(), path, meta)?;
        self.dir_times.push((path.to_path_buf(), meta.mtime));
        Ok(())
    }

    fn symlink(&mut self, path: &Path, target: &[u8], meta: &Meta) -> Result<()> {
        let target = CString::new(target)
            .map_err(|_| self.invalid(path, "symlink target has a NUL byte"))?;
        let (dir, name) = self.parent(path)?;
        if let Err(e) = root::symlink_at(&target, dir.as_fd(), &name) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(self.err(path, "create symlink")(e));
            }
            self.parent_cache = None;
            self.clear_slot(dir.as_fd(), &name, path)?;
            root::symlink_at(&target, dir.as_fd(), &name)
                .map_err(self.err(path, "create symlink"))?;
        }
        self.set_meta_at(dir.as_fd(), &name, path, meta, false)
    }

    fn node(
        &mut self,
        path: &Path,
        fmt: libc::mode_t,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<()> {
        let (dir, name) = self.parent(path)?;
        if let Err(e) = root::mknod_at(dir.as_fd(), &name, fmt | 0o600, dev) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(self.err(path, "mknod")(e));
            }
            self.parent_cache = None;
            self.clear_slot(dir.as_fd(), &name, path)?;
            root::mknod_at(dir.as_fd(), &name, fmt | 0o600, dev)
                .map_err(self.err(path, "mknod"))?;
        }
        self.set_meta_at(dir.as_fd(), &name, path, meta, true)
    }

    fn finish(&mut self) -> Result<()> {
        self.parent_cache = None;
        for (path, t) in std::mem::take(&mut self.dir_times) {
            let res = if path.as_os_str().is_empty() {
                root::futimens(self.root.fd(), t)
            } else {
                match self.root.parent_of(&path) {
                    Ok((d, n)) => root::lutimens_at(d.as_fd(), &n, t),
                    Err(e) => Err(e),
                }
            };
            match res {
                Ok(()) => {}
                // Removed later in the same layer (a whiteout in apply mode): nothing to date.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {}
                Err(e) => return Err(self.err(&path, "set directory mtime")(e)),
            }
        }
        if self.opts.sync {
            root::syncfs(self.root.fd()).map_err(|source| UnpackError::Target {
                path: self.root.path().to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Opens a trusted directory path as an fd for [`remove_all_in`].
pub(crate) fn open_dir_fd(path: &Path) -> io::Result<OwnedFd> {
    Root::open(path).map(Root::into_fd)
}

/// Removes `name` inside the open directory `dir`, recursively, never following symlinks.
pub(crate) fn remove_all_in(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let name = root::cstring(name)?;
    root::remove_all_at(dir.as_fd(), &name)
}

/// `syncfs` of the filesystem holding `dir`.
pub(crate) fn syncfs_path(dir: &Path) -> io::Result<()> {
    let r = Root::open(dir)?;
    root::syncfs(r.fd())
}

//! Hardlinks: within the layer, or into a lower layer, where the target is copied up into
//! this layer's snapshot (overlay snapshots cannot link across layers).

use super::*;

impl Applier<'_> {
    pub(super) fn hardlink(&mut self, path: &Path, target: &Path) -> Result<()> {
        if target == path {
            return Ok(());
        }
        if target.as_os_str().is_empty() {
            return Err(self.invalid(path, "hardlink to the root directory"));
        }
        let (tdir, tname) = match self.root.parent_of(target) {
            Ok(x) => x,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return self.copy_up(path, target),
            Err(e) => return Err(self.err(path, "resolve hardlink target")(e)),
        };
        let (dir, name) = self.parent(path)?;
        match root::link_at(tdir.as_fd(), &tname, dir.as_fd(), &name) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.parent_cache = None;
                self.clear_slot(dir.as_fd(), &name, path)?;
                match root::link_at(tdir.as_fd(), &tname, dir.as_fd(), &name) {
                    Ok(()) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.copy_up(path, target),
                    Err(e) => Err(self.err(path, "create hardlink")(e)),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.copy_up(path, target),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                Err(self.invalid(path, &format!("hardlink target {target:?} is a directory")))
            }
            Err(e) => Err(self.err(path, "create hardlink")(e)),
        }
    }

    /// A hardlink whose target is not in this layer: in overlay mode the target lives in a lower
    /// snapshot, which we cannot link across, so the file is copied (what overlayfs copy-up
    /// would do). In apply mode, or when no lower layer has it, the archive is broken.
    pub(super) fn copy_up(&mut self, path: &Path, target: &Path) -> Result<()> {
        let not_found = || {
            self.invalid(
                path,
                &format!("hardlink target {target:?} does not exist in this layer or below"),
            )
        };
        let mut found = None;
        for lower in &self.lowers {
            if let Ok((d, n)) = lower.parent_of(target) {
                if let Ok(Some(st)) = root::lstat_at(d.as_fd(), &n) {
                    found = Some((d, n, st));
                    break;
                }
            }
        }
        let Some((ldir, lname, st)) = found else {
            if self.deferring() {
                self.stats
                    .deferred
                    .links
                    .push((path.to_path_buf(), target.to_path_buf()));
                return Ok(());
            }
            return Err(not_found());
        };
        let kind = st.st_mode & libc::S_IFMT;
        let meta = Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: libc::timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec,
            },
            xattrs: Vec::new(),
        };
        self.stats.copied_up += 1;
        match kind {
            libc::S_IFREG => {
                let src = root::openat_raw(
                    ldir.as_raw_fd(),
                    &lname,
                    libc::O_RDONLY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(self.err(path, "open lower hardlink target"))?;
                let xattrs =
                    root::fxattrs(src.as_fd()).map_err(self.err(path, "read lower xattrs"))?;
                let size = st.st_size as u64;
                if self.stats.bytes.saturating_add(size) > self.opts.max_bytes {
                    return Err(UnpackError::TooLarge {
                        path: path.to_path_buf(),
                        limit: self.opts.max_bytes,
                    });
                }
                let mut src = std::fs::File::from(src);
                let (dir, name) = self.parent(path)?;
                self.reserve_space(dir.as_fd(), path, size)?;
                self.parent_cache = None;
                self.clear_slot(dir.as_fd(), &name, path)?;
                let fd = root::openat_raw(
                    dir.as_raw_fd(),
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(self.err(path, "create file"))?;
                let mut dst = std::fs::File::from(fd);
                let n = io::copy(&mut src, &mut dst).map_err(self.err(path, "copy lower file"))?;
                self.stats.bytes += n;
                let meta = Meta {
                    xattrs: xattrs
                        .into_iter()
                        .filter(|(k, _)| !k.to_bytes().starts_with(b"trusted.overlay."))
                        .collect(),
                    ..meta
                };
                self.set_meta_fd(dst.as_fd(), path, &meta)?;
                root::futimens(dst.as_fd(), meta.mtime).map_err(self.err(path, "set mtime"))?;
                Ok(())
            }
            libc::S_IFLNK => {
                let t = root::readlink_at(ldir.as_fd(), &lname)
                    .map_err(self.err(path, "read lower symlink"))?;
                drop(ldir);
                self.symlink(path, t.as_bytes(), &meta)
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                self.node(path, kind, st.st_rdev, &meta)
            }
            _ => Err(self.invalid(
                path,
                &format!("hardlink target {target:?} in a lower layer is a directory"),
            )),
        }
    }
}

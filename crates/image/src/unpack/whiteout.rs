//! Whiteouts: deleted names and opaque directories, stored for overlayfs or applied by
//! deleting (see [`WhiteoutMode`]).

use super::*;

impl Applier<'_> {
    pub(super) fn whiteout(&mut self, raw: &Path, path: &Path, hidden: &str) -> Result<()> {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(self.invalid(raw, &format!("invalid whiteout name {hidden:?}")));
        }
        self.stats.whiteouts += 1;
        let target = path.with_file_name(hidden);
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let (dir, name) = self.parent(&target)?;
                if let Err(e) =
                    root::mknod_at(dir.as_fd(), &name, libc::S_IFCHR, libc::makedev(0, 0))
                {
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(self.err(path, "create whiteout device")(e));
                    }
                    self.parent_cache = None;
                    self.clear_slot(dir.as_fd(), &name, path)?;
                    root::mknod_at(dir.as_fd(), &name, libc::S_IFCHR, libc::makedev(0, 0))
                        .map_err(self.err(path, "create whiteout device"))?;
                }
                Ok(())
            }
            WhiteoutMode::Apply => {
                let (dir, name) = match self.root.parent_of(&target) {
                    Ok(x) => x,
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
                    {
                        return Ok(())
                    }
                    Err(e) => return Err(self.err(path, "resolve whiteout target")(e)),
                };
                self.parent_cache = None;
                self.created.remove(&target);
                self.clear_slot(dir.as_fd(), &name, path)
            }
        }
    }

    pub(super) fn opaque(&mut self, path: &Path) -> Result<()> {
        let dir_path = path.parent().unwrap_or(Path::new("")).to_path_buf();
        self.stats.whiteouts += 1;
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let fd = self.mkdir_all(&dir_path, path)?;
                root::setxattr_at(
                    fd.as_fd(),
                    None,
                    &CString::new(OVERLAY_OPAQUE_XATTR).expect("literal"),
                    b"y",
                )
                .map_err(self.err(path, "set trusted.overlay.opaque"))
            }
            WhiteoutMode::Apply => {
                let fd = match self.root.open_dir(&dir_path) {
                    Ok(fd) => fd,
                    Err(e)
                        if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) =>
                    {
                        return Ok(())
                    }
                    Err(e) => return Err(self.err(path, "open opaque directory")(e)),
                };
                self.parent_cache = None;
                clear_not_created(fd.as_fd(), &dir_path, &self.created)
                    .map_err(self.err(path, "clear opaque directory"))
            }
        }
    }
}

/// Removes everything below `dir` that this layer did not create (apply mode's opaque
/// whiteout), descending into directories the layer did create, since their lower content is
/// hidden too.
fn clear_not_created(
    dir: BorrowedFd<'_>,
    rel: &Path,
    created: &HashSet<PathBuf>,
) -> io::Result<()> {
    for name in root::list_dir(dir)? {
        let child = rel.join(OsStr::from_bytes(name.to_bytes()));
        if !created.contains(&child) {
            root::remove_all_at(dir, &name)?;
            continue;
        }
        let is_dir = root::lstat_at(dir, &name)?.is_some_and(|st| root::is_dir(&st));
        if is_dir {
            let sub = root::openat_raw(
                dir.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            clear_not_created(sub.as_fd(), &child, created)?;
        }
    }
    Ok(())
}

//! Entry metadata: owner, mode, times and xattrs from the tar header and its PAX records, and
//! setting them on what was created.

use super::*;

/// Metadata of one entry, gathered from the header and its PAX records.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: libc::timespec,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
}

impl Applier<'_> {
    pub(super) fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &'static str| {
            let p = path.to_path_buf();
            move |source| UnpackError::Entry {
                path: p,
                op: what,
                source,
            }
        };
        // An all-NUL/space numeric field means 0 (Go's archive/tar reads it so; some writers
        // leave uid/gid blank); anything else unparsable is an error naming the entry.
        let old = h.as_old();
        let blank = |f: &[u8]| f.iter().all(|b| *b == 0 || *b == b' ');
        let mode = match h.mode() {
            Ok(m) => m,
            Err(_) if blank(&old.mode) => 0,
            Err(e) => return Err(bad("bad mode field")(e)),
        } & 0o7777;
        let uid = match h.uid() {
            Ok(u) => u,
            Err(_) if blank(&old.uid) => 0,
            Err(e) => return Err(bad("bad uid field")(e)),
        };
        let gid = match h.gid() {
            Ok(g) => g,
            Err(_) if blank(&old.gid) => 0,
            Err(e) => return Err(bad("bad gid field")(e)),
        };
        let uid = u32::try_from(uid).map_err(|_| self.invalid(path, "uid does not fit 32 bits"))?;
        let gid = u32::try_from(gid).map_err(|_| self.invalid(path, "gid does not fit 32 bits"))?;
        let mut mtime = libc::timespec {
            tv_sec: h.mtime().unwrap_or(0) as libc::time_t,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Tar)? {
            for ext in pax {
                let ext = ext.map_err(UnpackError::Tar)?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if let Ok(c) = CString::new(name) {
                        xattrs.push((c, ext.value_bytes().to_vec()));
                    }
                } else if key == "mtime" {
                    if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown clears
    /// security.capability) of an open file or directory.
    pub(super) fn set_meta_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        path: &Path,
        meta: &Meta,
    ) -> Result<()> {
        if self.opts.preserve_owner {
            root::fchown(fd, meta.uid, meta.gid).map_err(self.err(path, "chown"))?;
        }
        root::fchmod(fd, meta.mode).map_err(self.err(path, "chmod"))?;
        for (k, v) in &meta.xattrs {
            if self.xattr_forbidden(k) {
                continue;
            }
            match root::fsetxattr(fd, k, v) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                    self.stats.skipped_xattrs += 1;
                    tracing::warn!(path = %path.display(), xattr = ?k, "filesystem does not support this xattr; skipped");
                }
                Err(e) => return Err(self.err(path, "set xattr")(e)),
            }
        }
        Ok(())
    }

    /// overlayfs interprets `trusted.overlay.*` (opaque, redirect, metacopy): a layer must not
    /// be able to set them itself in overlay mode.
    pub(super) fn xattr_forbidden(&mut self, key: &CStr) -> bool {
        let forbidden = self.opts.whiteouts == WhiteoutMode::Overlay
            && key.to_bytes().starts_with(b"trusted.overlay.");
        if forbidden {
            self.stats.skipped_xattrs += 1;
        }
        forbidden
    }

    /// Metadata for entries that are not opened (symlinks, nodes), via the parent dir fd.
    pub(super) fn set_meta_at(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        meta: &Meta,
        chmod: bool,
    ) -> Result<()> {
        if self.opts.preserve_owner {
            root::lchown_at(dir, name, meta.uid, meta.gid).map_err(self.err(path, "chown"))?;
        }
        if chmod {
            root::chmod_at(dir, name, meta.mode).map_err(self.err(path, "chmod"))?;
        }
        for (k, v) in &meta.xattrs {
            if self.xattr_forbidden(k) {
                continue;
            }
            match root::setxattr_at(dir, Some(name), k, v) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
                    // user.* xattrs are not allowed on symlinks and devices.
                    self.stats.skipped_xattrs += 1;
                }
                Err(e) => return Err(self.err(path, "set xattr")(e)),
            }
        }
        root::lutimens_at(dir, name, meta.mtime).map_err(self.err(path, "set mtime"))
    }
}

/// Parses a PAX time (`1700000000.123456789`, possibly negative) into a timespec.
fn parse_pax_time(s: &str) -> Option<libc::timespec> {
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    Some(libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    })
}

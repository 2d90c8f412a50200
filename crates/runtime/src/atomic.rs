//! Crash-safe file replacement: write a temp file, fsync it, rename over the target,
//! fsync the directory. A reader sees the old or the new content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    publish(path, data, true)?.sync()
}

/// Writes `data` to a temp file beside `path` (fsynced when `sync_first`) and renames it over
/// `path`.
fn publish(path: &Path, data: &[u8], sync_first: bool) -> io::Result<Unsynced> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> io::Result<File> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        if sync_first {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        Ok(f)
    })();
    match res {
        Ok(file) => Ok(Unsynced {
            file: Some(file).filter(|_| !sync_first),
            path: path.to_path_buf(),
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
    }
}

/// A file [`publish_file`] put in place whose data and directory entry are not on disk yet.
#[must_use = "call sync() to make the file durable"]
pub struct Unsynced {
    /// `None` when the data was synced before the rename already.
    file: Option<File>,
    path: PathBuf,
}

impl Unsynced {
    /// fsyncs the file and its directory.
    pub fn sync(self) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let res = match &self.file {
            Some(f) => f.sync_all(),
            None => Ok(()),
        };
        res.and_then(|()| File::open(dir)?.sync_all())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

/// Like [`write_file`], but renames the complete temp file into place *before* the fsyncs,
/// which the caller does later with [`Unsynced::sync`]. Readers (other processes) see the
/// old or the new content, never a torn one, as with `write_file`; only a power loss before
/// `sync` may lose the new file. For the shim's exit record, where every waiter is waiting
/// for the file to appear and the two fsyncs (~1 ms) need not be in between.
pub fn publish_file(path: &Path, data: &[u8]) -> io::Result<Unsynced> {
    publish(path, data, false)
}

/// Disk space set aside for a small file that must be written later even on a full disk (the
/// shim's exit record): a temp file beside the target, allocated up front with `fallocate`
/// (zeros written where the filesystem cannot). Overwriting already allocated blocks and
/// renaming within a directory need no new space, so [`Reservation::publish`] works when the
/// filesystem has filled up meanwhile. Data larger than the reservation is still tried.
pub struct Reservation {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
}

impl Reservation {
    /// Reserves `size` bytes for `target` (in a hidden temp file beside it).
    pub fn create(target: &Path, size: u64) -> io::Result<Self> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
        let tmp = dir.join(format!(".{}.reserved", name.to_string_lossy()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let res = match nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            nix::fcntl::FallocateFlags::empty(),
            0,
            size as libc::off_t,
        ) {
            Ok(()) => Ok(()),
            // Filesystems without fallocate: real zeros take the blocks just as well.
            Err(nix::errno::Errno::EOPNOTSUPP) => file
                .write_all(&vec![0u8; size as usize])
                .and_then(|()| file.flush()),
            Err(e) => Err(io::Error::from(e)),
        };
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(io::Error::new(e.kind(), format!("{}: {e}", tmp.display())));
        }
        Ok(Reservation {
            file,
            tmp,
            target: target.to_path_buf(),
        })
    }

    /// Writes `data` into the reserved blocks, trims the file to it and renames it over the
    /// target; durable after [`Unsynced::sync`].
    pub fn publish(mut self, data: &[u8]) -> io::Result<Unsynced> {
        use std::io::{Seek, SeekFrom};
        let res = (|| -> io::Result<()> {
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(data)?;
            self.file.set_len(data.len() as u64)?;
            fs::rename(&self.tmp, &self.target)
        })();
        match res {
            Ok(()) => Ok(Unsynced {
                file: Some(self.file),
                path: self.target,
            }),
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                Err(io::Error::new(
                    e.kind(),
                    format!("{}: {e}", self.target.display()),
                ))
            }
        }
    }

    /// Gives the space back without writing anything.
    pub fn release(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_publishes_in_place_and_trims() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("exit.json");
        let r = Reservation::create(&target, 8192).unwrap();
        let tmp = d.path().join(".exit.json.reserved");
        assert_eq!(fs::metadata(&tmp).unwrap().len(), 8192);
        r.publish(b"{\"a\":1}").unwrap().sync().unwrap();
        assert!(!tmp.exists());
        assert_eq!(fs::read(&target).unwrap(), b"{\"a\":1}");
        // Larger than reserved still works where there is space.
        let big = vec![b'x'; 10000];
        Reservation::create(&target, 16)
            .unwrap()
            .publish(&big)
            .unwrap()
            .sync()
            .unwrap();
        assert_eq!(fs::read(&target).unwrap(), big);
        Reservation::create(&target, 16).unwrap().release();
        assert!(!tmp.exists());
    }
}

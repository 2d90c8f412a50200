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

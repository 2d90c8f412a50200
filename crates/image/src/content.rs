//! The verified content store: `root/content/blobs/sha256/<hex>` holds blobs whose sha256 has
//! been checked; `root/content/ingest/` holds partial downloads.
//!
//! Why this shape: a blob only ever appears under `blobs/` by an atomic rename after its size and
//! digest were verified and its data fsynced, so a crash (or SIGKILL) at any moment leaves either
//! no blob or a complete one. Partial downloads survive in `ingest/` so a puller can resume with
//! an HTTP Range request; an exclusive `flock` on a per-digest lock file makes concurrent ingests
//! of the same digest (two pulls sharing a layer) wait for each other instead of interleaving.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestHasher};

/// Errors of the content store. Each names the digest and path involved.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} not found in the content store ({path})")]
    NotFound { digest: Digest, path: PathBuf },
    #[error("blob verification failed: expected {expected} ({expected_size}), got {actual} ({actual_size} bytes); the partial download was deleted")]
    Mismatch {
        expected: Digest,
        expected_size: String,
        actual: Digest,
        actual_size: u64,
    },
    #[error("blob {digest}: {size} bytes written, more than the expected {expected_size}")]
    TooLarge {
        digest: Digest,
        size: u64,
        expected_size: u64,
    },
    #[error("blob {digest} is too large to read into memory ({size} bytes; limit {limit})")]
    TooLargeToRead {
        digest: Digest,
        size: u64,
        limit: u64,
    },
}

pub type Result<T, E = ContentError> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `read_blob` is for manifests and configs; refuse anything bigger than this.
pub const MAX_READ_BLOB: u64 = 64 << 20;

/// A content-addressed blob store rooted at `root/content`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store under `root/content`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("content/blobs/sha256");
        let ingest = root.join("content/ingest");
        for dir in [&blobs, &ingest] {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        Ok(Self { blobs, ingest })
    }

    /// Where the verified blob `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// The directory of partial downloads.
    pub fn ingest_dir(&self) -> &Path {
        &self.ingest
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
                path,
            }),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
                path,
            }),
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    /// Reads a small blob (manifest, config, index) into memory. Refuses blobs over
    /// [`MAX_READ_BLOB`] so a hostile "config" cannot exhaust memory.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut f = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let size = f.metadata().map_err(io_err("stat", &path))?.len();
        if size > MAX_READ_BLOB {
            return Err(ContentError::TooLargeToRead {
                digest: digest.clone(),
                size,
                limit: MAX_READ_BLOB,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).map_err(io_err("read", &path))?;
        Ok(buf)
    }

    /// Stores `bytes` (small blobs: manifests, configs) and returns their digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut ingest = self.ingest(&digest, Some(bytes.len() as u64))?;
        if !ingest.is_complete() {
            ingest.truncate()?;
            ingest
                .write_all(bytes)
                .map_err(io_err("write", &ingest.path))?;
            ingest.commit()?;
        }
        Ok(digest)
    }

    /// Stores everything `reader` yields as one blob, verifying it against `expected` when given;
    /// returns the digest. Streams: memory use is one buffer.
    pub fn write_blob_from(
        &self,
        reader: &mut dyn Read,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<Digest> {
        match expected {
            Some((digest, size)) => {
                let mut ingest = self.ingest(digest, size)?;
                if ingest.is_complete() {
                    // Drain nothing: the caller's stream is simply not needed.
                    return Ok(digest.clone());
                }
                ingest.truncate()?;
                copy_large(reader, &mut ingest).map_err(io_err("write", &ingest.path.clone()))?;
                ingest.commit()?;
                Ok(digest.clone())
            }
            None => {
                // Unknown digest: spool to a private temp file in ingest/, then move into place.
                let mut tmp = tempfile::Builder::new()
                    .prefix("spool-")
                    .tempfile_in(&self.ingest)
                    .map_err(io_err("create temp file in", &self.ingest))?;
                let tmp_path = tmp.path().to_path_buf();
                let mut hashing = HashingWriter {
                    inner: tmp.as_file_mut(),
                    hasher: DigestHasher::new(),
                };
                copy_large(reader, &mut hashing).map_err(io_err("write", &tmp_path))?;
                let digest = hashing.hasher.finish();
                let final_path = self.blob_path(&digest);
                if final_path.is_file() {
                    return Ok(digest);
                }
                tmp.as_file()
                    .sync_all()
                    .map_err(io_err("fsync", tmp.path()))?;
                tmp.persist(&final_path)
                    .map_err(|e| io_err("rename into place", &tmp_path)(e.error))?;
                sync_dir(&self.blobs)?;
                Ok(digest)
            }
        }
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Every blob in the store. Stray non-digest names are ignored.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(io_err("read directory", &self.blobs))? {
            let entry = entry.map_err(io_err("read directory", &self.blobs))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Ok(d) = Digest::from_hex(name) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Starts or resumes writing blob `expected`.
    ///
    /// Blocks while another ingest of the same digest is running (in this or another process).
    /// If the blob is already stored when the lock is obtained, the returned ingest
    /// [`is_complete`](Ingest::is_complete) and `commit` just returns the blob's path.
    /// Otherwise `offset()` bytes of an earlier partial download are already on disk (and
    /// hashed); write the rest (e.g. fetched with `Range: bytes=<offset>-`), or call
    /// [`Ingest::truncate`] to start over.
    pub fn ingest(&self, expected: &Digest, expected_size: Option<u64>) -> Result<Ingest> {
        let lock_path = self.ingest.join(format!("{}.lock", expected.hex()));
        let lock = lock_file(&lock_path, libc::LOCK_EX)?.ok_or_else(|| {
            io_err("lock", &lock_path)(io::Error::from(io::ErrorKind::WouldBlock))
        })?;
        self.ingest_locked(expected, expected_size, lock, lock_path)
    }

    /// Like [`ingest`](Self::ingest) but never blocks: `Ok(None)` while another ingest of the
    /// same digest is running (for async callers that would rather poll than park a thread).
    pub fn try_ingest(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Option<Ingest>> {
        let lock_path = self.ingest.join(format!("{}.lock", expected.hex()));
        match lock_file(&lock_path, libc::LOCK_EX | libc::LOCK_NB)? {
            Some(lock) => self
                .ingest_locked(expected, expected_size, lock, lock_path)
                .map(Some),
            None => Ok(None),
        }
    }

    fn ingest_locked(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        lock: File,
        lock_path: PathBuf,
    ) -> Result<Ingest> {
        let path = self.ingest.join(format!("{}.data", expected.hex()));
        let blob_path = self.blob_path(expected);
        let mut ingest = Ingest {
            expected: expected.clone(),
            expected_size,
            path,
            blob_path,
            blobs_dir: self.blobs.clone(),
            file: None,
            hasher: DigestHasher::new(),
            lock: Some((lock, lock_path)),
            done: false,
            resumed_from: 0,
        };
        if ingest.blob_path.is_file() {
            ingest.done = true;
            return Ok(ingest);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&ingest.path)
            .map_err(io_err("open", &ingest.path))?;
        let existing = file.metadata().map_err(io_err("stat", &ingest.path))?.len();
        let too_big = expected_size.is_some_and(|s| existing > s);
        if too_big {
            file.set_len(0).map_err(io_err("truncate", &ingest.path))?;
        } else if existing > 0 {
            // Re-hash the resumed prefix so commit verifies the whole file, not just the tail.
            let mut reader = BufReader::with_capacity(1 << 20, &mut file);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(io_err("read", &ingest.path))?;
                if n == 0 {
                    break;
                }
                ingest.hasher.update(&buf[..n]);
            }
        }
        file.seek(SeekFrom::End(0))
            .map_err(io_err("seek", &ingest.path))?;
        ingest.resumed_from = ingest.hasher.len();
        ingest.file = Some(file);
        Ok(ingest)
    }

    /// Removes partial downloads that nobody is writing right now. Returns bytes freed.
    pub fn clean_ingest(&self) -> Result<u64> {
        let mut freed = 0;
        let entries = fs::read_dir(&self.ingest).map_err(io_err("read directory", &self.ingest))?;
        for entry in entries {
            let entry = entry.map_err(io_err("read directory", &self.ingest))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(hex) = name.strip_suffix(".lock") {
                let lock_path = entry.path();
                let Ok(Some(_lock)) = lock_file(&lock_path, libc::LOCK_EX | libc::LOCK_NB) else {
                    continue; // an ingest is running
                };
                let data = self.ingest.join(format!("{hex}.data"));
                if let Ok(m) = fs::metadata(&data) {
                    freed += m.len();
                }
                let _ = fs::remove_file(&data);
                let _ = fs::remove_file(&lock_path);
            } else if name.starts_with("spool-") {
                // Spool files of crashed loads; a live one would be open, but spools are
                // short-lived and only made by `write_blob_from` without a digest.
                if let Ok(m) = entry.metadata() {
                    let old = m
                        .modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age.as_secs() > 3600);
                    if old {
                        freed += m.len();
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(freed)
    }
}

/// A blob being written into `ingest/`. Holds the per-digest lock until committed, aborted or
/// dropped (dropping keeps the partial data for a later resume).
pub struct Ingest {
    expected: Digest,
    expected_size: Option<u64>,
    path: PathBuf,
    blob_path: PathBuf,
    blobs_dir: PathBuf,
    file: Option<File>,
    hasher: DigestHasher,
    lock: Option<(File, PathBuf)>,
    done: bool,
    resumed_from: u64,
}

impl Ingest {
    /// Bytes that were already on disk when this ingest started (0 for a fresh one). If a
    /// commit fails after a resume (e.g. the partial file was damaged by a power loss), the
    /// caller should retry once from zero.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Bytes already on disk (resume from here). Equals the blob size when already complete.
    pub fn offset(&self) -> u64 {
        if self.done {
            return fs::metadata(&self.blob_path).map(|m| m.len()).unwrap_or(0);
        }
        self.hasher.len()
    }

    /// True when the blob was already in the store: nothing needs to be written.
    pub fn is_complete(&self) -> bool {
        self.done
    }

    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    pub fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    /// Throws away the partial data, e.g. when the registry does not honour a Range request.
    pub fn truncate(&mut self) -> Result<()> {
        if let Some(f) = &mut self.file {
            f.set_len(0).map_err(io_err("truncate", &self.path))?;
            f.seek(SeekFrom::Start(0))
                .map_err(io_err("seek", &self.path))?;
            self.hasher = DigestHasher::new();
            self.resumed_from = 0;
        }
        Ok(())
    }

    /// Verifies size and digest of everything written (resumed prefix included), fsyncs and
    /// renames the data into `blobs/`. On mismatch the partial is deleted and the error names
    /// expected and actual digest and size.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.done {
            self.release();
            return Ok(self.blob_path.clone());
        }
        let Some(file) = self.file.take() else {
            return Ok(self.blob_path.clone());
        };
        let hasher = std::mem::take(&mut self.hasher);
        let actual_size = hasher.len();
        let actual = hasher.finish();
        let size_ok = self.expected_size.is_none_or(|s| s == actual_size);
        if actual != self.expected || !size_ok {
            drop(file);
            let _ = fs::remove_file(&self.path);
            self.release();
            return Err(ContentError::Mismatch {
                expected: self.expected.clone(),
                expected_size: match self.expected_size {
                    Some(s) => format!("{s} bytes"),
                    None => "size unknown".to_string(),
                },
                actual,
                actual_size,
            });
        }
        file.sync_all().map_err(io_err("fsync", &self.path))?;
        drop(file);
        fs::rename(&self.path, &self.blob_path).map_err(io_err("rename into place", &self.path))?;
        sync_dir(&self.blobs_dir)?;
        self.release();
        Ok(self.blob_path.clone())
    }

    /// Deletes the partial data and releases the lock.
    pub fn abort(mut self) {
        self.file = None;
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
        self.release();
    }

    fn release(&mut self) {
        if let Some((lock, path)) = self.lock.take() {
            // Remove the lock file while still holding the lock, so a waiter that opened the
            // same inode re-checks for the committed blob (it does: ingest() checks after locking).
            let _ = fs::remove_file(&path);
            drop(lock);
        }
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(file) = &mut self.file else {
            return Err(io::Error::other(format!(
                "blob {} is already complete; nothing to write",
                self.expected
            )));
        };
        if let Some(limit) = self.expected_size {
            if self.hasher.len() + buf.len() as u64 > limit {
                return Err(io::Error::other(ContentError::TooLarge {
                    digest: self.expected.clone(),
                    size: self.hasher.len() + buf.len() as u64,
                    expected_size: limit,
                }));
            }
        }
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("expected", &self.expected)
            .field("offset", &self.hasher.len())
            .field("done", &self.done)
            .finish()
    }
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: DigestHasher,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `io::copy` with a 1 MiB buffer: std's generic copy uses 8 KiB, which costs measurably on
/// the pull path.
pub(crate) fn copy_large(reader: &mut dyn Read, writer: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Opens (creating) and `flock`s `path`, retrying when the file was unlinked by its previous
/// holder while we waited (the lock would then be on an orphaned inode nobody else sees).
/// Returns `None` when `op` has `LOCK_NB` and the lock is busy.
pub(crate) fn lock_file(path: &Path, op: libc::c_int) -> Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err("open lock file", path))?;
        match flock(&file, op) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(io_err("lock", path)(e)),
        }
        let held = file.metadata().map_err(io_err("stat", path))?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(Some(file)),
            _ => continue,
        }
    }
}

/// fsyncs a directory so a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// `flock(2)` on a whole file. Hand-written (two lines) rather than another crate: nix's
/// `Flock` takes ownership of the file, which does not fit keeping the path alongside.
pub(crate) fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the fd number, which `file` keeps open for the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.write_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of_bytes(b"hello"));
        assert!(cs.contains(&d));
        assert_eq!(cs.read_blob(&d).unwrap(), b"hello");
        assert_eq!(cs.list().unwrap(), vec![d.clone()]);
        assert_eq!(
            cs.blob_path(&d),
            dir.path().join("content/blobs/sha256").join(d.hex())
        );
        cs.delete(&d).unwrap();
        assert!(!cs.contains(&d));
        assert!(matches!(
            cs.read_blob(&d),
            Err(ContentError::NotFound { .. })
        ));
    }

    #[test]
    fn ingest_resumes_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let d = Digest::of_bytes(&data);
        {
            let cs = ContentStore::open(dir.path()).unwrap();
            let mut ing = cs.ingest(&d, Some(data.len() as u64)).unwrap();
            assert_eq!(ing.offset(), 0);
            ing.write_all(&data[..1_234_567]).unwrap();
            // dropped without commit: simulates a killed download
        }
        let cs = ContentStore::open(dir.path()).unwrap();
        assert!(!cs.contains(&d), "a partial blob must never be visible");
        let mut ing = cs.ingest(&d, Some(data.len() as u64)).unwrap();
        assert_eq!(ing.offset(), 1_234_567);
        assert_eq!(ing.resumed_from(), 1_234_567);
        let off = ing.offset() as usize;
        ing.write_all(&data[off..]).unwrap();
        let path = ing.commit().unwrap();
        assert_eq!(fs::read(path).unwrap(), data);
        assert!(!cs.ingest_dir().join(format!("{}.data", d.hex())).exists());
    }

    #[test]
    fn corrupt_blob_is_rejected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"the real content");
        let mut ing = cs.ingest(&d, Some(16)).unwrap();
        ing.write_all(b"the fake content").unwrap();
        let err = ing.commit().unwrap_err().to_string();
        assert!(err.contains(&d.to_string()), "{err}");
        assert!(
            err.contains(&Digest::of_bytes(b"the fake content").to_string()),
            "{err}"
        );
        assert!(!cs.contains(&d));
        assert!(!cs.ingest_dir().join(format!("{}.data", d.hex())).exists());
        // the wrong size is caught too, and named
        let mut ing = cs.ingest(&d, Some(99)).unwrap();
        ing.write_all(b"the real content").unwrap();
        let err = ing.commit().unwrap_err().to_string();
        assert!(
            err.contains("99 bytes") && err.contains("16 bytes"),
            "{err}"
        );
        // a resumed prefix that is wrong is caught at commit, not trusted
        let mut ing = cs.ingest(&d, Some(16)).unwrap();
        ing.write_all(b"XXX").unwrap();
        drop(ing);
        let mut ing = cs.ingest(&d, Some(16)).unwrap();
        assert_eq!(ing.offset(), 3);
        ing.write_all(b" real content").unwrap();
        assert!(ing.commit().is_err());
        assert!(!cs.contains(&d));
    }

    #[test]
    fn writing_past_expected_size_fails() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"abc");
        let mut ing = cs.ingest(&d, Some(3)).unwrap();
        assert!(ing.write_all(b"abcd").is_err());
        ing.abort();
        assert!(!cs.ingest_dir().join(format!("{}.data", d.hex())).exists());
    }

    #[test]
    fn concurrent_ingests_of_one_digest_serialise() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = vec![42u8; 5 << 20];
        let d = Digest::of_bytes(&data);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cs = cs.clone();
                let data = data.clone();
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut ing = cs.ingest(&d, Some(data.len() as u64)).unwrap();
                    if !ing.is_complete() {
                        let off = ing.offset() as usize;
                        for chunk in data[off..].chunks(65536) {
                            ing.write_all(chunk).unwrap();
                        }
                    }
                    ing.commit().unwrap()
                })
            })
            .collect();
        for t in threads {
            let p = t.join().unwrap();
            assert_eq!(fs::read(p).unwrap().len(), data.len());
        }
        assert_eq!(cs.list().unwrap(), vec![d]);
    }

    #[test]
    fn try_ingest_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"x");
        let first = cs.try_ingest(&d, Some(1)).unwrap().expect("free");
        assert!(cs.try_ingest(&d, Some(1)).unwrap().is_none(), "busy");
        first.abort();
        let mut again = cs.try_ingest(&d, Some(1)).unwrap().expect("free again");
        again.write_all(b"x").unwrap();
        again.commit().unwrap();
        assert!(cs.try_ingest(&d, Some(1)).unwrap().unwrap().is_complete());
    }

    #[test]
    fn write_blob_from_stream_without_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = vec![7u8; 3 << 20];
        let d = cs.write_blob_from(&mut &data[..], None).unwrap();
        assert_eq!(d, Digest::of_bytes(&data));
        assert_eq!(cs.size(&d).unwrap(), data.len() as u64);
        let wrong = Digest::of_bytes(b"other");
        assert!(cs
            .write_blob_from(&mut &data[..], Some((&wrong, None)))
            .is_err());
    }
}

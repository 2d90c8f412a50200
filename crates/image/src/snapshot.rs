//! Snapshots: one unpacked layer per directory, `root/snapshots/<n>/fs`, keyed by chain id and
//! shared by every image whose layer chain has that prefix. The ids are short numbers because
//! an overlay mount's option string (all lowerdirs) must fit in one page.
//!
//! Creation is crash-safe and race-free: the creator holds a per-chain-id `flock`, unpacks into
//! `snapshots/tmp-<chain hex>-<random>/fs`, and then, inside one SQLite write transaction,
//! inserts the row and renames the temp dir to `snapshots/<n>`. A crash leaves at worst a temp
//! dir (or a numbered dir without a row), which [`SnapshotStore::open`] removes.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::content::{lock_file, ContentError};
use crate::db::{Db, DbError};
use crate::digest::Digest;

/// An unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The short number naming its directory.
    pub id: u64,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    /// The unpacked filesystem (`snapshots/<id>/fs`), usable as an overlay lowerdir.
    pub path: PathBuf,
    /// Bytes of file data in this layer.
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unpacking snapshot for chain {chain_id}: {source}")]
    Fill {
        chain_id: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("corrupt snapshot row {id}: {detail}")]
    Corrupt { id: u64, detail: String },
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::digest::chain_ids;

/// The snapshot directories and their index.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    locks: PathBuf,
    db: Db,
}

impl SnapshotStore {
    /// Opens `root/snapshots` with the index in `root/agent.db`, removing leftovers of crashed
    /// creations and removals.
    pub fn open(root: &Path) -> Result<Self> {
        let db = Db::open(root)?;
        Self::with_db(root, db)
    }

    pub(crate) fn with_db(root: &Path, db: Db) -> Result<Self> {
        let dir = root.join("snapshots");
        let locks = dir.join("locks");
        fs::create_dir_all(&locks).map_err(io_err("create directory", &locks))?;
        let store = Self { dir, locks, db };
        store.clean()?;
        Ok(store)
    }

    /// The directory holding all snapshots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fs_path(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string()).join("fs")
    }

    fn row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, String, Option<String>, u64)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    }

    fn to_snapshot(&self, row: (u64, String, Option<String>, u64)) -> Result<Snapshot> {
        let (id, chain, parent, size) = row;
        let corrupt = |detail: String| SnapshotError::Corrupt { id, detail };
        let chain_id = Digest::parse(&chain).map_err(|e| corrupt(e.to_string()))?;
        let parent = match parent {
            Some(p) => Some(Digest::parse(&p).map_err(|e| corrupt(e.to_string()))?),
            None => None,
        };
        Ok(Snapshot {
            id,
            chain_id,
            parent,
            path: self.fs_path(id),
            size,
        })
    }

    /// The committed snapshot for `chain_id`, if any.
    pub fn get(&self, chain_id: &Digest) -> Result<Option<Snapshot>> {
        let row = {
            let conn = self.db.lock();
            conn.query_row(
                "SELECT id, chain_id, parent, size FROM snapshots WHERE chain_id = ?1",
                [chain_id.to_string()],
                |r| self.row(r),
            )
            .optional()
            .map_err(|e| self.db.err(e))?
        };
        row.map(|r| self.to_snapshot(r)).transpose()
    }

    /// Every committed snapshot, by id.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let rows = {
            let conn = self.db.lock();
            let mut st = conn
                .prepare("SELECT id, chain_id, parent, size FROM snapshots ORDER BY id")
                .map_err(|e| self.db.err(e))?;
            let rows = st
                .query_map([], |r| self.row(r))
                .map_err(|e| self.db.err(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.db.err(e))?;
            rows
        };
        rows.into_iter().map(|r| self.to_snapshot(r)).collect()
    }

    /// Returns the snapshot for `chain_id`, creating it with `fill` if it does not exist.
    ///
    /// `fill` gets an empty directory to unpack into. Concurrent calls for the same chain id
    /// (threads or processes) serialise: the second waits and then reuses the first's result;
    /// `fill` runs at most once per successful snapshot. If `fill` fails, its partial directory
    /// is removed and the error returned.
    pub fn create<E>(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> Result<Snapshot>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(s) = self.get(chain_id)? {
            return Ok(s);
        }
        let lock_path = self.locks.join(format!("{}.lock", chain_id.hex()));
        let _lock = lock_file(&lock_path, libc::LOCK_EX)?;
        // Unlinked while still held once we are done (whatever the outcome): a waiter then
        // finds it replaced, re-locks a fresh file and re-checks for the snapshot.
        let _unlink = UnlinkOnDrop(&lock_path);
        if let Some(s) = self.get(chain_id)? {
            return Ok(s);
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("tmp-{}-", chain_id.hex()))
            .tempdir_in(&self.dir)
            .map_err(io_err("create temporary snapshot in", &self.dir))?;
        let fs_dir = tmp.path().join("fs");
        fs::create_dir(&fs_dir).map_err(io_err("create directory", &fs_dir))?;
        // The fs root is the container's `/`: world-searchable, root-owned.
        fs::set_permissions(&fs_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err("chmod", &fs_dir))?;
        if let Err(e) = fill(&fs_dir) {
            let source = e.into();
            // tempdir's Drop would follow nothing but may fail on odd modes; use our remover.
            let _ = remove_tree(tmp.path());
            return Err(SnapshotError::Fill {
                chain_id: chain_id.clone(),
                source,
            });
        }
        let size = tree_size(&fs_dir);
        let tmp_path = tmp.keep();
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        tx.execute(
            "INSERT INTO snapshots (chain_id, parent, size, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                chain_id.to_string(),
                parent.map(|p| p.to_string()),
                size,
                chrono::Utc::now().to_rfc3339()
            ],
        )
        .map_err(|e| self.db.err(e))?;
        let id = tx.last_insert_rowid() as u64;
        let final_dir = self.dir.join(id.to_string());
        if let Err(e) = fs::rename(&tmp_path, &final_dir) {
            drop(tx);
            drop(conn);
            let _ = remove_tree(&tmp_path);
            return Err(io_err("rename snapshot into place", &tmp_path)(e));
        }
        crate::content::sync_dir(&self.dir)?;
        tx.commit().map_err(|e| self.db.err(e))?;
        Ok(Snapshot {
            id,
            chain_id: chain_id.clone(),
            parent: parent.cloned(),
            path: final_dir.join("fs"),
            size,
        })
    }

    /// Deletes a snapshot (row, then directory). The caller must know it is not in use.
    pub fn remove(&self, chain_id: &Digest) -> Result<bool> {
        let mut conn = self.db.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        let id: Option<u64> = tx
            .query_row(
                "SELECT id FROM snapshots WHERE chain_id = ?1",
                [chain_id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db.err(e))?;
        let Some(id) = id else { return Ok(false) };
        tx.execute("DELETE FROM snapshots WHERE id = ?1", [id])
            .map_err(|e| self.db.err(e))?;
        let dir = self.dir.join(id.to_string());
        let doomed = self.dir.join(format!("del-{id}"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("rename snapshot for removal", &dir)(e)),
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        drop(conn);
        remove_tree(&doomed).map_err(io_err("remove", &doomed))?;
        Ok(true)
    }

    /// Removes leftovers: temp dirs of creations nobody is running, `del-*` dirs of interrupted
    /// removals, and numbered dirs without a row (a crash between rename and commit).
    fn clean(&self) -> Result<()> {
        let mut conn = self.db.lock();
        // The write lock keeps a concurrent create (rename + commit) from interleaving.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db.err(e))?;
        let ids: std::collections::HashSet<u64> = {
            let mut st = tx
                .prepare("SELECT id FROM snapshots")
                .map_err(|e| self.db.err(e))?;
            let ids = st
                .query_map([], |r| r.get::<_, u64>(0))
                .map_err(|e| self.db.err(e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| self.db.err(e))?;
            ids
        };
        let entries = fs::read_dir(&self.dir).map_err(io_err("read directory", &self.dir))?;
        let mut doomed_dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let stale = if let Some(rest) = name.strip_prefix("tmp-") {
                // Stale when nobody holds the chain's creation lock.
                let hex = rest.split('-').next().unwrap_or("");
                let lock = self.locks.join(format!("{hex}.lock"));
                matches!(lock_file(&lock, libc::LOCK_EX | libc::LOCK_NB), Ok(Some(_)))
            } else if name.starts_with("del-") {
                true
            } else if let Ok(id) = name.parse::<u64>() {
                !ids.contains(&id)
            } else {
                false
            };
            if stale {
                tracing::info!(path = %path.display(), "removing leftover snapshot directory");
                if name.parse::<u64>().is_ok() {
                    // Out of the numbered namespace now, removed after the write lock is gone.
                    let doomed = self.dir.join(format!("del-{name}"));
                    fs::rename(&path, &doomed).map_err(io_err("rename", &path))?;
                    doomed_dirs.push(doomed);
                } else {
                    doomed_dirs.push(path);
                }
            }
        }
        tx.commit().map_err(|e| self.db.err(e))?;
        drop(conn);
        // Deleting can take a while; other writers need not wait for it.
        for path in doomed_dirs {
            remove_tree(&path).map_err(io_err("remove", &path))?;
        }
        self.clean_locks()
    }

    /// Removes creation lock files of chains that have no snapshot and no creator.
    pub(crate) fn clean_locks(&self) -> Result<()> {
        let entries = fs::read_dir(&self.locks).map_err(io_err("read directory", &self.locks))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            let Ok(chain) = Digest::from_hex(hex) else {
                continue;
            };
            if self.get(&chain)?.is_some() {
                continue;
            }
            let path = entry.path();
            if let Ok(Some(_held)) = lock_file(&path, libc::LOCK_EX | libc::LOCK_NB) {
                // Unlinked while held: a waiter re-opens and locks the new file.
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

/// Removes a file when dropped (declared after the lock it names, so it runs first).
struct UnlinkOnDrop<'a>(&'a Path);

impl Drop for UnlinkOnDrop<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// Removes a directory tree without following symlinks (it may hold hostile content).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or(OsStr::new(""));
    let pfd = crate::unpack::open_dir_fd(parent)?;
    crate::unpack::remove_all_in(&pfd, name)
}

/// Bytes of regular-file data below `dir`, each inode counted once.
pub(crate) fn tree_size(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn d(s: &str) -> Digest {
        Digest::of_bytes(s.as_bytes())
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = d("a");
        let b = d("b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of_bytes(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn create_get_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let c = d("layer");
        assert!(store.get(&c).unwrap().is_none());
        let s = store
            .create(&c, None, |p| fs::write(p.join("hello"), b"world"))
            .unwrap();
        assert_eq!(s.path, tmp.path().join(format!("snapshots/{}/fs", s.id)));
        assert_eq!(fs::read(s.path.join("hello")).unwrap(), b"world");
        assert_eq!(s.size, 5);
        assert_eq!(store.get(&c).unwrap(), Some(s.clone()));
        // a reopened store sees it
        let store2 = SnapshotStore::open(tmp.path()).unwrap();
        assert_eq!(store2.get(&c).unwrap(), Some(s.clone()));
        assert!(store.remove(&c).unwrap());
        assert!(store.get(&c).unwrap().is_none());
        assert!(!s.path.exists());
        // ids are never reused
        let s2 = store.create(&c, None, |_| Ok::<_, io::Error>(())).unwrap();
        assert!(s2.id > s.id);
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let c = d("bad");
        let err = store
            .create(&c, None, |p| {
                fs::write(p.join("partial"), b"x")?;
                Err(io::Error::other("boom"))
            })
            .unwrap_err();
        assert!(err.to_string().contains(&c.to_string()), "{err}");
        assert!(store.get(&c).unwrap().is_none());
        let left: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "locks")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn concurrent_creates_unpack_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let c = d("shared");
        let fills = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                // separate stores = separate connections, as separate processes would have
                let store = SnapshotStore::open(tmp.path()).unwrap();
                let fills = fills.clone();
                let c = c.clone();
                std::thread::spawn(move || {
                    store
                        .create(&c, None, |p| {
                            fills.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(100));
                            fs::write(p.join("f"), b"1")
                        })
                        .unwrap()
                })
            })
            .collect();
        let snaps: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(fills.load(Ordering::SeqCst), 1);
        assert!(snaps.iter().all(|s| s == &snaps[0]));
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn crash_leftovers_are_cleaned_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let c = d("x");
        let kept = store.create(&c, None, |_| Ok::<_, io::Error>(())).unwrap();
        // a crash mid-unpack, one mid-removal, and one between rename and commit
        let dir = store.dir().to_path_buf();
        fs::create_dir_all(dir.join(format!("tmp-{}-abc/fs/usr", d("y").hex()))).unwrap();
        fs::create_dir_all(dir.join("del-7/fs")).unwrap();
        fs::create_dir_all(dir.join("999/fs")).unwrap();
        drop(store);
        let store = SnapshotStore::open(tmp.path()).unwrap();
        let mut left: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec![kept.id.to_string(), "locks".to_string()]);
        assert!(kept.path.exists());
    }
}

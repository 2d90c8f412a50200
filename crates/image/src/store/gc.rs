//! Garbage collection: mark-and-sweep from the image records. A pull or load in progress
//! holds a [`Lease`] (a shared `flock` on `root/gc.lock`); `prune` takes the lock exclusively,
//! so it never sweeps blobs or snapshots a running pull has written but not yet recorded.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use super::{io_err, ImageStore, PruneReport, Result};
use crate::digest::Digest;
use crate::snapshot::Snapshot;

/// Protection from `prune` while held: take one for the duration of a pull or load.
#[derive(Debug)]
pub struct Lease {
    _file: File,
}

impl ImageStore {
    /// Takes a GC lease: `prune` waits until every lease is dropped.
    pub fn lease(&self) -> Result<Lease> {
        Ok(Lease {
            _file: self.gc_lock(libc::LOCK_SH)?,
        })
    }

    /// `root/gc.lock`, locked with `mode` (shared: a lease; exclusive: a prune).
    fn gc_lock(&self, mode: libc::c_int) -> Result<File> {
        let path = self.root.join("gc.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        crate::content::flock(&file, mode).map_err(io_err("lock", &path))?;
        Ok(file)
    }

    /// Garbage collection: deletes dangling image records (no names) whose snapshots are not in
    /// use, then every blob and snapshot no image references. Snapshots in `in_use_snapshots`
    /// (and their ancestors) are never removed. Waits for running pulls/loads (leases).
    pub fn prune(&self, in_use_snapshots: &HashSet<u64>) -> Result<PruneReport> {
        let _gc = self.gc_lock(libc::LOCK_EX)?;
        let mut report = PruneReport::default();

        // Keep set of snapshots: in use, plus their ancestors.
        let all_snaps = self.snapshots.list()?;
        let by_chain: HashMap<Digest, &Snapshot> =
            all_snaps.iter().map(|s| (s.chain_id.clone(), s)).collect();
        let mut keep_snaps: HashSet<u64> = HashSet::new();
        for s in all_snaps
            .iter()
            .filter(|s| in_use_snapshots.contains(&s.id))
        {
            let mut cur: Option<&Snapshot> = Some(s);
            while let Some(c) = cur {
                if !keep_snaps.insert(c.id) {
                    break;
                }
                cur = c.parent.as_ref().and_then(|p| by_chain.get(p).copied());
            }
        }

        // Dangling images go unless one of their snapshots is in use.
        for rec in self.records()? {
            if !rec.names.is_empty() {
                continue;
            }
            let chain = self.layer_chain(&rec).unwrap_or_default();
            let used = chain
                .iter()
                .any(|(_, _, c)| by_chain.get(c).is_some_and(|s| keep_snaps.contains(&s.id)));
            if used {
                continue;
            }
            let conn = self.db.lock();
            conn.execute(
                "DELETE FROM images WHERE manifest_digest = ?1",
                [rec.manifest_digest.to_string()],
            )
            .map_err(|e| self.db.err(e))?;
            report.images_removed.push(rec.manifest_digest);
        }

        // Mark.
        let mut keep_blobs: HashSet<Digest> = HashSet::new();
        let mut keep_chains: HashSet<Digest> = HashSet::new();
        for rec in self.records()? {
            keep_blobs.insert(rec.manifest_digest.clone());
            keep_blobs.insert(rec.config_digest.clone());
            match self.layer_chain(&rec) {
                Ok(chain) => {
                    for (l, _, c) in chain {
                        keep_blobs.insert(l.digest);
                        keep_chains.insert(c);
                    }
                }
                Err(e) => {
                    // Unreadable manifest/config: keep every snapshot rather than guess.
                    tracing::warn!(image = %rec.display_name(), error = %e, "cannot read image; its layers are kept");
                    keep_chains.extend(all_snaps.iter().map(|s| s.chain_id.clone()));
                }
            }
        }
        // Sweep.
        for s in &all_snaps {
            if keep_chains.contains(&s.chain_id) || keep_snaps.contains(&s.id) {
                continue;
            }
            let size = s.size;
            if self.snapshots.remove(&s.chain_id)? {
                report.snapshots_removed.push(s.id);
                report.bytes_freed += size;
            }
        }
        for d in self.content.list()? {
            if keep_blobs.contains(&d) {
                continue;
            }
            let size = self.content.size(&d).unwrap_or(0);
            self.content.delete(&d)?;
            report.blobs_removed.push(d);
            report.bytes_freed += size;
        }
        report.bytes_freed += self.content.clean_ingest()?;
        self.snapshots.clean_locks()?;
        Ok(report)
    }
}

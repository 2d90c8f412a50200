//! Removing a container directory off the caller's path.
//!
//! `rm` (and the end of `run --rm`) used to unmount the overlay and delete the directory
//! before answering. Both are slow for reasons outside our control: an unmount waits for an
//! RCU grace period (10–60 ms measured on the 2-core build machine under load), and every
//! unlink on ext4 queues behind the journal when other processes write a lot. Now the
//! directory is renamed into `--root/trash/` (one rename; the rootfs mount moves with it)
//! and the record deleted, which is all a caller can observe: the name is free, `ps -a` and
//! `containers/` no longer show it. A background task unmounts and deletes the trash entry.
//!
//! Nothing is lost when the daemon dies first: the next start purges whatever `trash/`
//! holds, and a SIGTERMed daemon finishes pending purges before it exits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{AgentError, Result};
use crate::Agent;

/// Purges in flight, so a stopping daemon can wait for them (network releases count too, see
/// `containers::network`).
#[derive(Default)]
pub(crate) struct Purges {
    running: AtomicUsize,
    idle: Notify,
}

impl Purges {
    pub(crate) fn start(&self) {
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn done(&self) {
        if self.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The rename that takes a container directory out of `containers/`. `Ok(None)`: there was
/// no directory (a failed create already removed it).
fn retire(container_dir: &Path, trash: &Path) -> std::io::Result<Option<PathBuf>> {
    std::fs::create_dir_all(trash)?;
    let Some(name) = container_dir.file_name() else {
        return Err(std::io::Error::other(format!(
            "{} has no file name",
            container_dir.display()
        )));
    };
    let mut target = trash.join(name);
    if target.exists() {
        // A leftover of the same id (a purge that failed): keep both.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        target = trash.join(format!("{}.{nanos}", name.to_string_lossy()));
    }
    match std::fs::rename(container_dir, &target) {
        Ok(()) => Ok(Some(target)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Agent {
    pub(crate) fn trash_dir(&self) -> PathBuf {
        self.config().paths.root.join("trash")
    }

    /// Takes the container directory out of `containers/` now and unmounts and deletes it in
    /// the background. Falls back to removing it in place when the rename fails.
    pub(crate) async fn discard_container_dir(&self, id: &str, name: &str) -> Result<()> {
        let dir = self.container_dir(id);
        let trash = self.trash_dir();
        let retired = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || retire(&dir, &trash))
                .await
                .map_err(|e| AgentError::internal(e.to_string()))?
        };
        match retired {
            Ok(Some(path)) => {
                self.purge_in_background(path);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!(%name, "moving {} to the trash: {e}; removing it in place", dir.display());
                tokio::task::spawn_blocking(move || zlayer_runtime::rootfs::remove(&dir))
                    .await
                    .map_err(|e| AgentError::internal(e.to_string()))?
                    .map_err(|e| AgentError::internal(format!("removing container {name}: {e}")))
            }
        }
    }

    fn purge_in_background(&self, path: PathBuf) {
        let purges = self.purges();
        let db = std::sync::Arc::clone(self.containers().db());
        purges.start();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = zlayer_runtime::rootfs::remove(&path) {
                tracing::warn!(
                    "removing {}: {e} (retried at the next daemon start)",
                    path.display()
                );
            }
            // The space just freed first goes back to the database's reserve, if it was
            // used up on a full disk.
            db.replenish_reserve();
            purges.done();
        });
    }

    /// At daemon start: purges what an earlier daemon left in the trash.
    pub(crate) fn purge_trash(&self) {
        let Ok(entries) = std::fs::read_dir(self.trash_dir()) else {
            return;
        };
        for e in entries.flatten() {
            self.purge_in_background(e.path());
        }
    }

    /// Waits (up to `timeout`) for background purges to finish: a stopping daemon leaves no
    /// mounts behind that it could have removed.
    pub async fn finish_purges(&self, timeout: Duration) {
        let purges = self.purges();
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let idle = purges.idle.notified();
                if purges.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retire_moves_the_directory_and_keeps_same_named_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let trash = d.path().join("trash");
        for round in 0..2 {
            let c = d.path().join("containers").join("abc");
            std::fs::create_dir_all(c.join("upper")).unwrap();
            std::fs::write(c.join("exit.json"), "{}").unwrap();
            let moved = retire(&c, &trash).unwrap().unwrap();
            assert!(!c.exists());
            assert!(moved.join("exit.json").exists());
            assert_eq!(std::fs::read_dir(&trash).unwrap().count(), round + 1);
        }
        let gone = d.path().join("containers").join("never-made");
        assert!(retire(&gone, &trash).unwrap().is_none());
    }
}

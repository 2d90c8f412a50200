//! A reserve of free space under the store, and a cap on an image's unpacked size, checked
//! while layers are unpacked: a 1 MB gzip layer holding a 1 GiB file of zeros must not be able
//! to fill the node's disk.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every entry costs at least a block; file data is counted in whole blocks.
const BLOCK: u64 = 4096;
/// Free space is re-read (one `fstatvfs`) after this many bytes were counted, and before any
/// file at least this large: often enough that the floor holds within a few MiB, rarely enough
/// to cost nothing on layers of a million small files.
const CHECK_EVERY: u64 = 8 << 20;

/// Shared by all layers of one image being unpacked.
#[derive(Debug)]
pub struct SpaceGuard {
    min_free: u64,
    max_image_bytes: Option<u64>,
    /// Bytes (in blocks) unpacked so far by all the image's layers.
    image_bytes: AtomicU64,
    /// Bytes counted since the free space was last read.
    unchecked: AtomicU64,
}

/// Why unpacking must stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpaceRefusal {
    /// Writing `needed` bytes would leave less than `floor` free (`available` now).
    FloorReached {
        needed: u64,
        available: u64,
        floor: u64,
    },
    /// The image's unpacked size would pass `limit` (`total` with this entry).
    ImageTooLarge { total: u64, limit: u64 },
}

impl std::fmt::Display for SpaceRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpaceRefusal::FloorReached {
                needed,
                available,
                floor,
            } => write!(
                f,
                "unpacking {needed} more bytes would leave {} of the {available} bytes free on the store's filesystem, below the free-space floor of {floor} bytes (daemon setting min_free_space_mib)",
                available.saturating_sub(*needed)
            ),
            SpaceRefusal::ImageTooLarge { total, limit } => write!(
                f,
                "the image's unpacked size would reach {total} bytes, over the limit of {limit} bytes (daemon setting max_image_unpacked_mib)"
            ),
        }
    }
}

impl SpaceGuard {
    /// `min_free`: bytes that must stay free on the filesystem; `max_image_bytes`: cap on the
    /// unpacked size of all the image's layers together.
    pub fn new(min_free: u64, max_image_bytes: Option<u64>) -> Self {
        Self {
            min_free,
            max_image_bytes,
            image_bytes: AtomicU64::new(0),
            unchecked: AtomicU64::new(0),
        }
    }

    /// Counts bytes of the image that are already unpacked (layers the node had).
    pub fn count_present(&self, bytes: u64) {
        self.image_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of the image unpacked so far (in whole blocks).
    pub fn image_bytes(&self) -> u64 {
        self.image_bytes.load(Ordering::Relaxed)
    }

    /// Accounts an entry with `size` bytes of data about to be written under `dir` (a
    /// directory on the store's filesystem); refuses when that would break a limit.
    pub fn reserve(&self, dir: BorrowedFd<'_>, size: u64) -> Result<(), SpaceRefusal> {
        let cost = size.div_ceil(BLOCK).max(1) * BLOCK;
        let total = self.image_bytes.fetch_add(cost, Ordering::Relaxed) + cost;
        if let Some(limit) = self.max_image_bytes {
            if total > limit {
                return Err(SpaceRefusal::ImageTooLarge { total, limit });
            }
        }
        let unchecked = self.unchecked.fetch_add(cost, Ordering::Relaxed) + cost;
        if self.min_free == 0 || (unchecked < CHECK_EVERY && cost < CHECK_EVERY) {
            return Ok(());
        }
        self.unchecked.store(0, Ordering::Relaxed);
        let Ok(st) = nix::sys::statvfs::fstatvfs(dir) else {
            // A filesystem that cannot say how full it is: nothing to hold the floor against.
            return Ok(());
        };
        // fsblkcnt_t and c_ulong are 32-bit on 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let available = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        if available < self.min_free.saturating_add(cost) {
            return Err(SpaceRefusal::FloorReached {
                needed: cost,
                available,
                floor: self.min_free,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn image_cap_counts_blocks_across_calls() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::open(dir.path()).unwrap();
        let g = SpaceGuard::new(0, Some(3 * BLOCK));
        g.reserve(f.as_fd(), 1).unwrap();
        g.reserve(f.as_fd(), BLOCK).unwrap();
        assert_eq!(g.image_bytes(), 2 * BLOCK);
        assert_eq!(
            g.reserve(f.as_fd(), BLOCK + 1),
            Err(SpaceRefusal::ImageTooLarge {
                total: 4 * BLOCK,
                limit: 3 * BLOCK
            })
        );
    }

    #[test]
    fn floor_refuses_a_file_larger_than_the_space_left() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::open(dir.path()).unwrap();
        let g = SpaceGuard::new(1, None);
        let err = g.reserve(f.as_fd(), u64::MAX / 2).unwrap_err();
        assert!(matches!(err, SpaceRefusal::FloorReached { floor: 1, .. }));
        assert!(err.to_string().contains("below the free-space floor"));
    }
}

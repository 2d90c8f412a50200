//! Pausing a container: its cgroup's freezer. v2 writes `cgroup.freeze` and watches
//! `cgroup.events` for `frozen 1`; v1 writes `freezer.state` and reads it back until the
//! kernel reports `FROZEN` (it passes through `FREEZING` while tasks are stopped).
//!
//! The frozen state lives in the kernel, not in the agent: a daemon restart keeps it, and
//! [`ContainerCgroup::is_frozen`] is what `ps` and `inspect` read.

use std::fs;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::ContainerCgroup;

/// How long a freeze or thaw may take before it is reported as failed (a task stuck in
/// an uninterruptible sleep keeps a v1 cgroup `FREEZING`).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A freeze or thaw that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("this host has no cgroup v1 freezer hierarchy, so containers cannot be paused")]
    NoFreezer,
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} did not reach {want} within {secs} seconds (last: {last:?})")]
    Timeout {
        path: PathBuf,
        want: &'static str,
        secs: u64,
        last: String,
    },
}

/// The file that commands the freezer, the value to write, and how to read whether it took.
struct FreezerFiles {
    control: PathBuf,
    value: &'static str,
    /// File whose text says whether the state was reached.
    status: PathBuf,
    want: &'static str,
}

/// Whether the v2 `cgroup.events` text says the cgroup is frozen.
pub fn v2_events_frozen(events: &str) -> bool {
    super::keyed_value(events, "frozen") == Some(1)
}

impl ContainerCgroup {
    fn freezer_files(&self, frozen: bool) -> Result<FreezerFiles, FreezeError> {
        let dir = self.dir("freezer").ok_or(FreezeError::NoFreezer)?;
        Ok(if self.is_v2() {
            FreezerFiles {
                control: dir.join("cgroup.freeze"),
                value: if frozen { "1" } else { "0" },
                status: dir.join("cgroup.events"),
                want: if frozen { "frozen 1" } else { "frozen 0" },
            }
        } else {
            let state = if frozen { "FROZEN" } else { "THAWED" };
            FreezerFiles {
                control: dir.join("freezer.state"),
                value: state,
                status: dir.join("freezer.state"),
                want: state,
            }
        })
    }

    /// Freezes (`true`) or thaws (`false`) every task of the cgroup and waits until the
    /// kernel says it is done.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), FreezeError> {
        let files = self.freezer_files(frozen)?;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            // v1 needs the write repeated while FREEZING (a task that forked meanwhile is
            // not frozen by the first write); repeating it on v2 is harmless.
            fs::write(&files.control, files.value).map_err(|source| FreezeError::Write {
                path: files.control.clone(),
                source,
            })?;
            let text = fs::read_to_string(&files.status).unwrap_or_default();
            let reached = if self.is_v2() {
                v2_events_frozen(&text) == frozen
            } else {
                text.trim() == files.want
            };
            if reached {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(FreezeError::Timeout {
                    path: files.status,
                    want: files.want,
                    secs: SETTLE_TIMEOUT.as_secs(),
                    last: text.trim().to_string(),
                });
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Whether the cgroup is frozen (or being frozen: v1 `FREEZING` counts, as a paused
    /// container it is). `false` when there is no freezer or no such cgroup.
    pub fn is_frozen(&self) -> bool {
        if self.is_v2() {
            self.read("", "cgroup.events")
                .is_some_and(|t| v2_events_frozen(&t))
        } else {
            self.read("freezer", "freezer.state")
                .is_some_and(|s| s == "FROZEN" || s == "FREEZING")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_events_are_read() {
        assert!(v2_events_frozen("populated 1\nfrozen 1\n"));
        assert!(!v2_events_frozen("populated 1\nfrozen 0\n"));
        assert!(!v2_events_frozen("populated 0\n"));
    }
}

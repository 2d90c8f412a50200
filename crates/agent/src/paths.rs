//! Where the agent keeps things on disk (see ARCHITECTURE.md, "On disk").

use std::path::{Path, PathBuf};

/// Default persistent root.
pub const DEFAULT_ROOT: &str = "/var/lib/zlayer-agent";
/// Default runtime state directory (tmpfs on most systems: gone after a reboot, as it should be).
pub const DEFAULT_STATE: &str = "/run/zlayer-agent";
/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/zlayer-agent/agent.sock";

/// The directories of one agent instance.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent data: content store, snapshots, containers, volumes, agent.db.
    pub root: PathBuf,
    /// Runtime state: the API socket, libcontainer's state, shim sockets.
    pub state: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state: state.into(),
        }
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn runtime_state(&self) -> PathBuf {
        self.state.join("runtime")
    }
    pub fn shims(&self) -> PathBuf {
        self.state.join("shims")
    }
    /// The lock that keeps two daemons off one root.
    pub fn daemon_lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// The agent's SQLite database (shared with zlayer-image's tables).
    pub fn db(&self) -> PathBuf {
        self.root.join("agent.db")
    }

    /// Creates every directory the agent writes to, and makes the data private to root:
    /// `--root` and `--state` (and the directories under them) are 0700, also when they existed
    /// before with looser modes, and `agent.db` with its WAL and shared-memory files is 0600.
    ///
    /// They hold every container's environment (passwords passed with `-e`), image
    /// snapshots with setuid binaries and device nodes (moby's CVE-2021-41091: a local user
    /// executed them through a traversable data root) and the API socket. Nothing needs to
    /// traverse them but root: the shim and libcontainer run as root, and a container's own
    /// non-root processes see their rootfs and bind mounts through their mount namespace,
    /// where no host path is walked, so 0710 (docker's mode for its root) is not needed.
    pub fn create_all(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        // A directory that existed before is tightened only when it is recognisably the
        // agent's (or empty): `--state /run` must fail, not turn /run into 0700.
        for (dir, option, markers) in [
            (&self.root, "--root", &["agent.db", "daemon.lock"][..]),
            (
                &self.state,
                "--state",
                &["runtime", "shims", "agent.sock"][..],
            ),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            if is_loose(dir)? && !looks_like_ours(dir, markers)? {
                return Err(std::io::Error::other(format!(
                    "{option} {} is open to other users (mode {:o}) and does not look like a \
                     zlayer-agent directory (none of {} in it): the agent keeps secrets and \
                     image files there, so use a directory of its own or make this one 0700",
                    dir.display(),
                    mode_of(dir)?,
                    markers.join(", ")
                )));
            }
            make_private(dir, 0o700)?;
        }
        for dir in [
            self.containers(),
            self.volumes(),
            self.runtime_state(),
            self.shims(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            make_private(&dir, 0o700)?;
        }
        self.make_db_private()
    }

    /// Creates `agent.db` as 0600 before SQLite does (SQLite then gives its `-wal` and `-shm`
    /// files the database's mode) and tightens files of an earlier, looser install.
    fn make_db_private(&self) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let db = self.db();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            let path = PathBuf::from(name);
            if path.exists() {
                make_private(&path, 0o600)?;
            }
        }
        Ok(())
    }
}

fn mode_of(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

/// Whether group or other users get anything on `path`.
fn is_loose(path: &Path) -> std::io::Result<bool> {
    Ok(mode_of(path)? & 0o077 != 0)
}

/// Empty, or holding one of the entries the agent creates there.
fn looks_like_ours(dir: &Path, markers: &[&str]) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(dir)?.next().is_none() || markers.iter().any(|m| dir.join(m).exists()))
}

/// Sets `mode` on `path` when its current mode grants group or other users anything
/// (logged, because it changes a directory the operator may have made on purpose).
fn make_private(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = mode_of(path)?;
    if current & 0o077 != 0 {
        tracing::info!(
            path = %path.display(),
            from = format!("{current:o}"),
            to = format!("{mode:o}"),
            "tightening permissions: only root may read the agent's data"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// True when `p` is absolute; the daemon refuses relative roots because it may chdir.
pub fn is_absolute(p: &Path) -> bool {
    p.is_absolute()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn set_mode(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn loose_agent_dirs_and_db_are_tightened() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::new(t.path().join("root"), t.path().join("state"));
        paths.create_all().unwrap();
        assert_eq!(mode_of(&paths.root).unwrap(), 0o700);
        assert_eq!(mode_of(&paths.db()).unwrap(), 0o600);
        for p in [&paths.root, &paths.state, &paths.containers()] {
            set_mode(p, 0o755);
        }
        set_mode(&paths.db(), 0o644);
        std::fs::write(t.path().join("root/agent.db-wal"), b"").unwrap();
        set_mode(&t.path().join("root/agent.db-wal"), 0o644);
        paths.create_all().unwrap();
        for p in [&paths.root, &paths.state, &paths.containers()] {
            assert_eq!(mode_of(p).unwrap(), 0o700, "{}", p.display());
        }
        assert_eq!(mode_of(&paths.db()).unwrap(), 0o600);
        assert_eq!(mode_of(&t.path().join("root/agent.db-wal")).unwrap(), 0o600);
    }

    #[test]
    fn a_loose_foreign_directory_is_refused_not_chmodded() {
        let t = tempfile::tempdir().unwrap();
        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("someone-elses-file"), b"").unwrap();
        set_mode(&shared, 0o755);
        let paths = Paths::new(t.path().join("root"), &shared);
        let e = paths.create_all().unwrap_err().to_string();
        assert!(
            e.contains("--state") && e.contains("open to other users"),
            "{e}"
        );
        assert_eq!(mode_of(&shared).unwrap(), 0o755);
    }
}

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
        for dir in [
            self.root.clone(),
            self.state.clone(),
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

/// Sets `mode` on `path` when its current mode grants group or other users anything
/// (logged, because it changes a directory the operator may have made on purpose).
fn make_private(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
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

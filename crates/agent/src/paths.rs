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

    /// Creates every directory the agent writes to (root and state are 0700: they hold other
    /// users' images and container filesystems).
    pub fn create_all(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [&self.root, &self.state] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
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
        }
        Ok(())
    }
}

/// True when `p` is absolute; the daemon refuses relative roots because it may chdir.
pub fn is_absolute(p: &Path) -> bool {
    p.is_absolute()
}

//! Test fixture: a busybox root filesystem (from Debian's busybox-static) used as the
//! overlay's lower layer, and per-test directories that are cleaned up afterwards.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use zlayer_runtime::oci_spec::image::ImageConfiguration;
use zlayer_runtime::RunOptions;
use zlayer_runtime::{launch, LaunchRequest, Launched, ShimClient};

pub const BUSYBOX: &str = "/bin/busybox";
pub const CGROUP_PARENT: &str = "/zlayer-runtime-test";

/// Root of everything the tests create (short path: socket paths have a length limit).
pub fn base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        // spawn-helper processes share their parent's directory.
        let p = std::env::var_os("ZLRT_BASE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/zlrt-{}", std::process::id())));
        fs::create_dir_all(&p).unwrap();
        p
    })
}

/// The busybox layer, built once per test run.
pub fn busybox_layer() -> &'static Path {
    static LAYER: OnceLock<PathBuf> = OnceLock::new();
    LAYER.get_or_init(|| {
        let l = base().join("layer");
        build_busybox_rootfs(&l);
        l
    })
}

/// Builds the layer once: spawn-helper processes share it with the test process, and
/// rewriting a binary that running containers execute would crash them (SIGBUS).
pub fn build_busybox_rootfs(l: &Path) {
    if l.join(".complete").exists() {
        return;
    }
    let tmp = l.with_extension(format!("tmp{}", std::process::id()));
    build_busybox_rootfs_at(&tmp);
    fs::write(tmp.join(".complete"), "").unwrap();
    if fs::rename(&tmp, l).is_err() {
        // built concurrently by another process: use theirs
        fs::remove_dir_all(&tmp).unwrap();
    }
}

fn build_busybox_rootfs_at(l: &Path) {
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app", "var",
    ] {
        fs::create_dir_all(l.join(d)).unwrap();
    }
    fs::set_permissions(l.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, l.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = l.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            symlink("busybox", link).unwrap();
        }
    }
    fs::write(
        l.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        l.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\n",
    )
    .unwrap();
    // A file that is present but not executable (exit 126 case).
    fs::write(l.join("bin/notexec"), "#!/bin/sh\necho no\n").unwrap();
    fs::set_permissions(l.join("bin/notexec"), fs::Permissions::from_mode(0o644)).unwrap();
}

pub fn image(cmd: &[&str]) -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=1"],
            "Cmd": cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

pub fn shim_cmd() -> Vec<OsString> {
    vec![std::env::current_exe().unwrap().into(), "shim".into()]
}

/// One container of one test; cleaned up on drop (shim stopped, rootfs removed).
pub struct TestContainer {
    /// Log rotation size for the shim (default 10 MB).
    pub log_max_size: u64,
    pub id: String,
    pub dir: PathBuf,
    pub state: PathBuf,
    /// Parent of the container's cgroup (default [`CGROUP_PARENT`]).
    pub cgroup_parent: String,
    pub launched: Option<Launched>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn new_id(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestContainer {
    pub fn paths(name: &str) -> TestContainer {
        let id = new_id(name);
        TestContainer {
            log_max_size: 10 << 20,
            dir: base().join("c").join(&id),
            state: base().join("s"),
            cgroup_parent: CGROUP_PARENT.to_string(),
            id,
            launched: None,
        }
    }

    pub fn start(
        name: &str,
        cmd: &[&str],
        opts: RunOptions,
    ) -> Result<TestContainer, zlayer_runtime::ClientError> {
        let mut t = TestContainer::paths(name);
        t.launch_here(cmd, opts)?;
        Ok(t)
    }

    /// Starts with the given paths; returns the container (for cleanup checks) and the result.
    pub fn start_with_paths(
        mut t: TestContainer,
        cmd: &[&str],
        opts: RunOptions,
    ) -> (TestContainer, Result<(), zlayer_runtime::ClientError>) {
        let r = t.launch_here(cmd, opts);
        (t, r)
    }

    pub fn launch_here(
        &mut self,
        cmd: &[&str],
        opts: RunOptions,
    ) -> Result<(), zlayer_runtime::ClientError> {
        self.launch_gated(cmd, opts, None)
    }

    /// Launches with an optional start gate (see `SpawnOptions::start_gate`).
    pub fn launch_gated(
        &mut self,
        cmd: &[&str],
        mut opts: RunOptions,
        start_gate: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(), zlayer_runtime::ClientError> {
        opts.cgroup_parent = Some(self.cgroup_parent.clone());
        let img = image(&["sh"]);
        let shim = shim_cmd();
        let layers = vec![busybox_layer().to_path_buf()];
        opts.cmd = cmd.iter().map(|s| s.to_string()).collect();
        let l = launch(&LaunchRequest {
            id: &self.id,
            container_dir: &self.dir,
            state_dir: &self.state,
            layers: &layers,
            image: &img,
            options: &opts,
            shim_cmd: &shim,
            log_max_size: self.log_max_size,
            log_max_files: 3,
            start_gate,
        })?;
        self.launched = Some(l);
        Ok(())
    }

    pub fn client(&self) -> ShimClient {
        ShimClient::for_container(&self.state, &self.dir, &self.id)
    }

    pub fn cgroups_path(&self) -> String {
        format!("{}/{}", self.cgroup_parent, self.id)
    }

    pub fn log_text(&self) -> String {
        let entries = zlayer_runtime::logs::read_all(&self.dir, None).unwrap();
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.format(false)).into_owned())
            .collect()
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let c = self.client();
        if let Ok(zlayer_runtime::ShimStatus::Running { .. }) = c.status() {
            let _ = c.stop(std::time::Duration::from_millis(100), libc::SIGKILL);
        }
        let _ = zlayer_runtime::rootfs::remove(&self.dir);
    }
}

/// Asserts nothing of container `id` remains: mount, cgroup, libcontainer state, socket,
/// shim process.
pub fn assert_nothing_left(t: &TestContainer) {
    assert!(
        !zlayer_runtime::rootfs::is_mounted(&t.dir.join("rootfs")),
        "rootfs still mounted"
    );
    assert!(!t.dir.exists(), "container dir {} left", t.dir.display());
    assert!(
        !t.state.join("runtime").join(&t.id).exists(),
        "libcontainer state left"
    );
    assert!(
        !zlayer_runtime::shim::socket_path(&t.state, &t.id).exists(),
        "socket left"
    );
    for ctrl in ["memory", "pids", "cpu", "devices", "freezer"] {
        if let Some(d) = zlayer_runtime::cgroups::ContainerCgroup::new(&t.cgroups_path()).dir(ctrl)
        {
            assert!(!d.exists(), "cgroup {} left", d.display());
        }
    }
    assert!(shim_processes(&t.id).is_empty(), "shim process left");
}

/// Pids of processes whose command line mentions `id`.
pub fn shim_processes(id: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            let s = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if s.contains(" shim ") && s.contains(id) {
                v.push(pid);
            }
        }
    }
    v
}

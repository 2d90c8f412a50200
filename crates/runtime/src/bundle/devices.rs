//! The host's device nodes, for `--privileged` containers (docker gives them every device the
//! host has, not just the default six).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::{json, Value};

/// Directories under /dev that are not device collections (or are mounted per container).
const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Devices the runtime creates in every container anyway.
const DEFAULT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/ptmx",
];

/// Every character and block device under `dev` as OCI `linux.devices` entries, sorted by path.
pub fn host_devices(dev: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    walk(dev, dev, &mut out, 0);
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Value>, depth: usize) {
    // /dev is shallow; the bound only guards against a loop through a strange mount.
    if depth > 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            let name = entry.file_name();
            if dir == root && SKIP_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            walk(root, &path, out, depth + 1);
            continue;
        }
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        // In the container the device lives at the same path under /dev.
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let target = Path::new("/dev").join(rel);
        let target = target.to_string_lossy().into_owned();
        if DEFAULT_DEVICES.contains(&target.as_str()) {
            continue;
        }
        let rdev = meta.rdev();
        out.push(json!({
            "path": target,
            "type": kind,
            "major": libc::major(rdev),
            "minor": libc::minor(rdev),
            "fileMode": meta.mode() & 0o7777,
            "uid": meta.uid(),
            "gid": meta.gid(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_device_nodes_but_not_the_defaults_or_pts() {
        let devs = host_devices(Path::new("/dev"));
        for d in &devs {
            let path = d["path"].as_str().unwrap();
            assert!(path.starts_with("/dev/"), "{d}");
            assert!(!path.starts_with("/dev/pts/"), "{d}");
            assert!(!DEFAULT_DEVICES.contains(&path), "{d}");
            assert!(matches!(d["type"].as_str(), Some("c" | "b")), "{d}");
        }
        let mut sorted = devs.clone();
        sorted.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        assert_eq!(sorted, devs);
    }
}

//! Unpack tests: hand-made tars (normal and hostile). Need root (chown, mknod, trusted.* xattrs).

use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

/// Root is needed (chown, mknod, trusted.* xattrs): under CI=true its absence fails the test.
pub(crate) fn is_root() -> bool {
    zlayer_testkit::prereq::require_root()
}

/// A tiny tar writer that does NOT sanitise names, so hostile archives can be made.
#[derive(Default)]
pub(crate) struct RawTar {
    buf: Vec<u8>,
}

pub(crate) struct E<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: &'a str,
    pub data: &'a [u8],
    pub pax: Vec<(String, Vec<u8>)>,
    pub dev: (u32, u32),
}

impl Default for E<'_> {
    fn default() -> Self {
        Self {
            name: "",
            kind: tar::EntryType::Regular,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            link: "",
            data: b"",
            pax: Vec::new(),
            dev: (0, 0),
        }
    }
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let old = h.as_old_mut();
        assert!(name.len() < 100, "test names must fit the old header");
        old.name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h
    }

    pub fn add(&mut self, e: E<'_>) -> &mut Self {
        if !e.pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &e.pax {
                let body_len = 1 + k.len() + 1 + v.len() + 1; // ' ' key '=' value '\n'
                let mut len = body_len + 1;
                while len.to_string().len() + body_len != len {
                    len = len.to_string().len() + body_len;
                }
                records.extend(format!("{len} {k}=").as_bytes());
                records.extend(v);
                records.push(b'\n');
            }
            let mut h = Self::header(
                b"PaxHeaders/x",
                tar::EntryType::XHeader,
                records.len() as u64,
            );
            h.set_mode(0o644);
            h.set_cksum();
            self.push(&h, &records);
        }
        let mut h = Self::header(e.name.as_bytes(), e.kind, e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        if !e.link.is_empty() {
            let old = h.as_old_mut();
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.push(&h, e.data);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(E {
            name,
            data,
            ..Default::default()
        })
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.add(E {
            name,
            kind: tar::EntryType::Directory,
            mode,
            ..Default::default()
        })
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            name,
            kind: tar::EntryType::Symlink,
            mode: 0o777,
            link: target,
            ..Default::default()
        })
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            name,
            kind: tar::EntryType::Link,
            link: target,
            ..Default::default()
        })
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) {
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// Everything about a tree, for "nothing outside changed" assertions.
pub(crate) fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let mut desc = format!(
                "mode={:o} uid={} gid={} nlink={} mtime={}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.mtime()
            );
            if m.file_type().is_symlink() {
                desc += &format!(" -> {:?}", fs::read_link(&p).unwrap());
            } else if m.is_file() {
                desc += &format!(" data={:?}", fs::read(&p).unwrap());
            }
            out.insert(p.strip_prefix(base).unwrap().to_path_buf(), desc);
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// A sandbox: `base/target` is unpacked into, `base/outside` must never change.
pub(crate) struct Sandbox {
    pub _tmp: tempfile::TempDir,
    pub target: PathBuf,
    pub outside: PathBuf,
    before: BTreeMap<PathBuf, String>,
}

impl Sandbox {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&target).unwrap();
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("secret"), b"do not touch").unwrap();
        fs::write(outside.join("sub/file"), b"nor this").unwrap();
        let before = tree(tmp.path().join("outside").as_path());
        Self {
            _tmp: tmp,
            target,
            outside,
            before,
        }
    }

    pub fn assert_outside_unchanged(&self) {
        assert_eq!(
            tree(&self.outside),
            self.before,
            "something outside changed"
        );
    }

    /// `outside` as an absolute path string.
    pub fn out(&self) -> String {
        self.outside.to_str().unwrap().to_string()
    }
}

fn overlay() -> ApplyOptions {
    ApplyOptions {
        sync: false,
        ..Default::default()
    }
}

fn apply_mode() -> ApplyOptions {
    ApplyOptions {
        whiteouts: WhiteoutMode::Apply,
        sync: false,
        ..Default::default()
    }
}

fn lgetxattr(p: &Path, key: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: valid C strings and buffer.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A layer with one entry of every kind, each with metadata to keep: setuid, setgid and
/// sticky modes, owners, a file capability and a user xattr, sub-second mtimes, a hardlink,
/// absolute, relative and dangling symlinks, a device node and a fifo.
fn every_kind_layer(cap: &[u8]) -> Vec<u8> {
    RawTar::new()
        .dir("./", 0o755)
        .add(E {
            name: "bin/",
            kind: tar::EntryType::Directory,
            mode: 0o755,
            mtime: 1_500_000_000,
            ..Default::default()
        })
        .add(E {
            name: "bin/su",
            mode: 0o4755,
            uid: 0,
            gid: 0,
            data: b"setuid",
            ..Default::default()
        })
        .add(E {
            name: "bin/ping",
            mode: 0o755,
            data: b"cap",
            pax: vec![
                ("SCHILY.xattr.security.capability".into(), cap.to_vec()),
                ("SCHILY.xattr.user.note".into(), b"hi".to_vec()),
                ("mtime".into(), b"1600000000.5".to_vec()),
            ],
            ..Default::default()
        })
        .add(E {
            name: "home/user/",
            kind: tar::EntryType::Directory,
            mode: 0o2750,
            uid: 1000,
            gid: 1001,
            ..Default::default()
        })
        .add(E {
            name: "tmp/",
            kind: tar::EntryType::Directory,
            mode: 0o1777,
            ..Default::default()
        })
        .add(E {
            name: "home/user/f",
            uid: 1000,
            gid: 1001,
            mode: 0o600,
            data: b"owned",
            ..Default::default()
        })
        .hardlink("bin/su2", "bin/su")
        .symlink("bin/sh", "/bin/busybox")
        .symlink("bin/rel", "../home/user/f")
        .symlink("bin/dangling", "nowhere")
        .add(E {
            name: "dev/null",
            kind: tar::EntryType::Char,
            mode: 0o666,
            dev: (1, 3),
            ..Default::default()
        })
        .add(E {
            name: "run/fifo",
            kind: tar::EntryType::Fifo,
            mode: 0o620,
            ..Default::default()
        })
        .finish()
}

#[test]
fn unpacks_every_kind_with_metadata() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let cap = vec![
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let tar = every_kind_layer(&cap);
    let stats = apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    assert_eq!(stats.bytes, 6 + 3 + 5);
    let t = &sb.target;
    let m = |p: &str| fs::symlink_metadata(t.join(p)).unwrap();
    assert_eq!(m("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(m("bin/su").nlink(), 2);
    assert_eq!(m("bin/su").ino(), m("bin/su2").ino());
    assert_eq!(m("home/user").mode() & 0o7777, 0o2750);
    assert_eq!((m("home/user").uid(), m("home/user").gid()), (1000, 1001));
    assert_eq!(
        (m("home/user/f").uid(), m("home/user/f").gid()),
        (1000, 1001)
    );
    assert_eq!(m("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(
        m("bin").mtime(),
        1_500_000_000,
        "dir mtime set after children"
    );
    assert_eq!(m("bin/ping").mtime(), 1_600_000_000);
    assert_eq!(m("bin/ping").mtime_nsec(), 500_000_000);
    assert_eq!(
        lgetxattr(&t.join("bin/ping"), "security.capability"),
        Some(cap)
    );
    assert_eq!(
        lgetxattr(&t.join("bin/ping"), "user.note"),
        Some(b"hi".to_vec())
    );
    assert_eq!(
        fs::read_link(t.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(t.join("bin/rel")).unwrap(),
        Path::new("../home/user/f")
    );
    assert_eq!(
        fs::read_link(t.join("bin/dangling")).unwrap(),
        Path::new("nowhere")
    );
    assert!(m("dev/null").file_type().is_char_device());
    assert_eq!(m("dev/null").rdev(), libc::makedev(1, 3));
    assert_eq!(m("dev/null").mode() & 0o7777, 0o666);
    assert!(m("run/fifo").file_type().is_fifo());
    assert_eq!(m("run/fifo").mode() & 0o7777, 0o620);
    sb.assert_outside_unchanged();
}

#[test]
fn overlay_whiteouts_are_char_devices_and_opaque_xattrs() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.gone", b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n")
        .file("usr/.wh.removed-dir", b"")
        .finish();
    let stats = apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let gone = fs::symlink_metadata(sb.target.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!sb.target.join("etc/.wh.gone").exists());
    assert!(fs::symlink_metadata(sb.target.join("usr/removed-dir"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        lgetxattr(&sb.target.join("var/cache"), OVERLAY_OPAQUE_XATTR),
        Some(b"y".to_vec())
    );
    assert!(!sb.target.join("var/cache/.wh..wh..opq").exists());
    assert_eq!(fs::read(sb.target.join("var/cache/new")).unwrap(), b"n");
}

#[test]
fn apply_mode_deletes_and_opaque_keeps_same_layer_entries() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let lower = RawTar::new()
        .file("a/keep", b"1")
        .file("a/gone", b"2")
        .file("d/old1", b"3")
        .file("d/sub/old2", b"4")
        .file("x/y/z", b"5")
        .finish();
    apply_layer(&sb.target, &lower[..], &apply_mode()).unwrap();
    let upper = RawTar::new()
        .file("a/.wh.gone", b"")
        .dir("d/", 0o755)
        .file("d/new-before", b"6")
        .file("d/.wh..wh..opq", b"")
        .dir("d/sub/", 0o755)
        .file("d/sub/new", b"7")
        .file(".wh.x", b"")
        .finish();
    apply_layer(&sb.target, &upper[..], &apply_mode()).unwrap();
    let t = &sb.target;
    assert!(t.join("a/keep").exists());
    assert!(!t.join("a/gone").exists());
    assert!(!t.join("d/old1").exists());
    assert!(!t.join("d/sub/old2").exists());
    assert!(t.join("d/new-before").exists());
    assert!(t.join("d/sub/new").exists());
    assert!(!t.join("x").exists());
}

#[test]
fn dot_dot_and_absolute_paths_stay_inside() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.out();
    let abs = format!("{out}/abs-planted");
    let tar = RawTar::new()
        .file("../../../../../outside/secret", b"overwritten?")
        .file("a/../../outside/planted", b"x")
        .file(&abs, b"y")
        .finish();
    apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    sb.assert_outside_unchanged();
    assert_eq!(
        fs::read(sb.target.join("outside/secret")).unwrap(),
        b"overwritten?"
    );
    assert!(sb.target.join("outside/planted").exists());
    assert!(sb.target.join(abs.trim_start_matches('/')).exists());
}

#[test]
fn symlink_to_root_then_file_beneath_stays_inside() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.out();
    let tar = RawTar::new()
        .symlink("escape", "/")
        .file(&format!("escape{out}/secret"), b"pwned")
        .symlink("esc2", "../../../../../../")
        .file(&format!("esc2{out}/sub/file"), b"pwned")
        .finish();
    apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    sb.assert_outside_unchanged();
    // Resolved as inside a chroot: landed under the target.
    assert_eq!(
        fs::read(sb.target.join(out.trim_start_matches('/')).join("secret")).unwrap(),
        b"pwned"
    );
}

#[test]
fn symlink_to_outside_dir_then_file_beneath_is_confined() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.out();
    // `link` points at the real outside dir by absolute path; inside the root that path does
    // not exist, so writing through it must fail or land inside, never outside.
    let tar = RawTar::new()
        .symlink("link", &out)
        .file("link/planted", b"pwned")
        .finish();
    let r = apply_layer(&sb.target, &tar[..], &overlay());
    sb.assert_outside_unchanged();
    if let Err(e) = r {
        assert!(e.to_string().contains("link/planted"), "{e}");
    }
}

#[test]
fn hardlink_to_outside_is_not_created() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.out();
    for target in [
        format!("{out}/secret"),
        "../outside/secret".to_string(),
        "../../../../../../../../etc/passwd".to_string(),
    ] {
        let tar = RawTar::new().hardlink("stolen", &target).finish();
        let err = apply_layer(&sb.target, &tar[..], &apply_mode()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        sb.assert_outside_unchanged();
        assert!(!sb.target.join("stolen").exists());
    }
    // via a symlinked directory
    let tar = RawTar::new()
        .symlink("up", &out)
        .hardlink("stolen2", "up/secret")
        .finish();
    assert!(apply_layer(&sb.target, &tar[..], &apply_mode()).is_err());
    sb.assert_outside_unchanged();
    assert!(!sb.target.join("stolen2").exists());
    assert_eq!(fs::metadata(sb.outside.join("secret")).unwrap().nlink(), 1);
}

#[test]
fn whiteout_naming_dot_dot_is_rejected() {
    if !is_root() {
        return;
    }
    for opts in [overlay(), apply_mode()] {
        let sb = Sandbox::new();
        fs::create_dir_all(sb.target.join("a/b")).unwrap();
        fs::write(sb.target.join("a/b/f"), b"stay").unwrap();
        let tar = RawTar::new().file("a/b/.wh...", b"").finish();
        let err = apply_layer(&sb.target, &tar[..], &opts).unwrap_err();
        assert!(err.to_string().contains("invalid whiteout name"), "{err}");
        assert!(sb.target.join("a/b/f").exists());
        sb.assert_outside_unchanged();
        // `.wh.` plus nothing, and a whiteout of the root via `..` clamping
        let tar = RawTar::new().file("a/.wh.", b"").finish();
        assert!(apply_layer(&sb.target, &tar[..], &opts).is_err());
        let tar = RawTar::new().file("../.wh.outside", b"").finish();
        let _ = apply_layer(&sb.target, &tar[..], &opts);
        sb.assert_outside_unchanged();
        assert!(sb.target.join("a/b/f").exists());
    }
}

#[test]
fn whiteouts_through_symlinks_never_delete_outside() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.out();
    let tar = RawTar::new()
        .symlink("link", &out)
        .file("link/.wh.secret", b"")
        .file("link/.wh..wh..opq", b"")
        .symlink("rel", "../outside")
        .file("rel/.wh.secret", b"")
        .file("rel/sub/.wh..wh..opq", b"")
        .finish();
    let _ = apply_layer(&sb.target, &tar[..], &apply_mode());
    sb.assert_outside_unchanged();
    let _ = apply_layer(&sb.target, &tar[..], &overlay());
    sb.assert_outside_unchanged();
}

#[test]
fn directory_replaced_by_symlink_then_file_beneath() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let out = sb.out();
    let tar = RawTar::new()
        .dir("d/", 0o755)
        .file("d/f", b"1")
        .symlink("d", &out)
        .file("d/secret", b"pwned")
        .symlink("e", "/")
        .file("e/planted", b"inside")
        .finish();
    let r = apply_layer(&sb.target, &tar[..], &overlay());
    sb.assert_outside_unchanged();
    if r.is_ok() {
        assert!(fs::symlink_metadata(sb.target.join("d"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // The same with the symlink pointing at `/`: the file lands at the root of the target.
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .dir("d/", 0o755)
        .file("d/f", b"1")
        .symlink("d", "/")
        .file("d/planted", b"inside")
        .finish();
    apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    assert_eq!(fs::read(sb.target.join("planted")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(sb.target.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
    sb.assert_outside_unchanged();
}

#[test]
fn tar_bomb_is_stopped() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let big = vec![0u8; 100_000];
    let tar = RawTar::new().file("a", &big).file("b", &big).finish();
    let opts = ApplyOptions {
        max_bytes: 150_000,
        ..overlay()
    };
    let err = apply_layer(&sb.target, &tar[..], &opts).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("\"b\""), "{err}");
    let opts = ApplyOptions {
        max_entries: 1,
        ..overlay()
    };
    assert!(matches!(
        apply_layer(&sb.target, &tar[..], &opts),
        Err(UnpackError::TooManyEntries { .. })
    ));
}

#[test]
fn hardlink_to_lower_layer_is_copied_up_and_parents_inherit() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    let l = RawTar::new()
        .add(E {
            name: "tmp/",
            kind: tar::EntryType::Directory,
            mode: 0o1777,
            ..Default::default()
        })
        .add(E {
            name: "usr/bin/tool",
            mode: 0o4711,
            uid: 5,
            gid: 6,
            data: b"tool",
            ..Default::default()
        })
        .finish();
    apply_layer(&lower, &l[..], &overlay()).unwrap();
    let u = RawTar::new()
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .file("tmp/x", b"x")
        .finish();
    let opts = ApplyOptions {
        lower_dirs: vec![lower.clone()],
        ..overlay()
    };
    let stats = apply_layer(&upper, &u[..], &opts).unwrap();
    assert_eq!(stats.copied_up, 1);
    let m = fs::symlink_metadata(upper.join("usr/bin/tool2")).unwrap();
    assert_eq!(fs::read(upper.join("usr/bin/tool2")).unwrap(), b"tool");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4711, 5, 6));
    assert_eq!(
        fs::metadata(upper.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777,
        "implicit parent inherits the lower layer's mode"
    );
}

#[test]
fn replacing_entries_of_every_kind() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("x", b"file")
        .dir("x/", 0o755)
        .file("x/in", b"1")
        .file("x", b"file again")
        .symlink("x", "target")
        .file("x", b"third")
        .dir("y/", 0o700)
        .dir("y/", 0o751)
        .finish();
    apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    assert_eq!(fs::read(sb.target.join("x")).unwrap(), b"third");
    assert_eq!(
        fs::metadata(sb.target.join("y")).unwrap().mode() & 0o7777,
        0o751
    );
}

#[test]
fn deferred_lower_work_is_finished_later() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    let l = RawTar::new()
        .add(E {
            name: "tmp/",
            kind: tar::EntryType::Directory,
            mode: 0o1777,
            mtime: 1_111_111_111,
            ..Default::default()
        })
        .add(E {
            name: "usr/bin/tool",
            mode: 0o4711,
            uid: 5,
            gid: 6,
            data: b"tool",
            ..Default::default()
        })
        .finish();
    let u = RawTar::new()
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .file("tmp/x", b"x")
        .finish();
    // The upper layer first, without its lower (as a parallel unpack would).
    let defer = ApplyOptions {
        defer_lower: true,
        ..overlay()
    };
    let stats = apply_layer(&upper, &u[..], &defer).unwrap();
    assert_eq!(
        stats.deferred.links,
        vec![(
            PathBuf::from("usr/bin/tool2"),
            PathBuf::from("usr/bin/tool")
        )]
    );
    assert!(stats.deferred.implicit_dirs.contains(&PathBuf::from("tmp")));
    assert!(!upper.join("usr/bin/tool2").exists());
    apply_layer(&lower, &l[..], &overlay()).unwrap();
    let finish = ApplyOptions {
        lower_dirs: vec![lower.clone()],
        ..overlay()
    };
    let done = apply_deferred(&upper, &stats.deferred, &finish).unwrap();
    assert_eq!(done.copied_up, 1);
    let m = fs::symlink_metadata(upper.join("usr/bin/tool2")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4711, 5, 6));
    let t = fs::metadata(upper.join("tmp")).unwrap();
    assert_eq!(t.mode() & 0o7777, 0o1777);
    assert_eq!(t.mtime(), 1_111_111_111);
    // a link whose target is nowhere is still an error when finishing
    let bad = Deferred {
        implicit_dirs: vec![],
        links: vec![(PathBuf::from("x"), PathBuf::from("nowhere"))],
    };
    assert!(apply_deferred(&upper, &bad, &finish).is_err());
}

#[test]
fn blank_numeric_fields_read_as_zero_garbage_is_an_error() {
    if !is_root() {
        return;
    }
    let sb = Sandbox::new();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..5].copy_from_slice(b"blank");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o640);
    h.set_size(2);
    h.set_cksum(); // uid/gid left all-NUL, as some writers do
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(b"ok");
    tar.extend(std::iter::repeat_n(0u8, 510 + 1024));
    apply_layer(&sb.target, &tar[..], &overlay()).unwrap();
    let m = fs::metadata(sb.target.join("blank")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 0, 0o640));

    h.as_old_mut().uid.copy_from_slice(b"zzzzzzz\0");
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(b"ok");
    tar.extend(std::iter::repeat_n(0u8, 510 + 1024));
    let err = apply_layer(&sb.target, &tar[..], &overlay()).unwrap_err();
    assert!(
        err.to_string().contains("blank") && err.to_string().contains("uid"),
        "{err}"
    );
}

//! `cp` between real containers and the host: docker's path rules in both directions, `-`
//! (tar on stdin/stdout), `-a`, `-L`, stopped containers, and hostile symlinks in the container
//! or in the archive that must never make a copy read or write outside the container's root.

mod common;

use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use common::{daemon_with_busybox, run, run_with_stdin, TestDaemon};

/// A running container `name` whose filesystem was prepared by `setup` (a shell script).
fn container(d: &TestDaemon, image: &str, name: &str, setup: &str) {
    let script = format!("{setup} && touch /ready && exec sleep 1000");
    d.ok(&["run", "-d", "--name", name, image, "sh", "-c", &script]);
    assert!(
        common::eventually(20, || run(d, &["exec", name, "test", "-e", "/ready"]).0
            == 0),
        "container {name} did not get ready: {}",
        d.log()
    );
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

const TREE: &str = "mkdir -p /data/dir/sub && echo a > /data/dir/a && echo b > /data/dir/sub/b \
    && echo file > /data/file && chmod 0751 /data/dir/a && echo u > /data/dir/sub/\u{fc}n\u{ef}";

#[test]
fn copies_out_of_a_container_with_dockers_path_rules() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    container(&d, &image, "src", TREE);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();

    // A file to a new name, into an existing directory, over an existing file.
    d.ok(&["cp", "src:/data/file", &s(&h.join("renamed"))]);
    assert_eq!(read(&h.join("renamed")), "file\n");
    std::fs::create_dir(h.join("into")).unwrap();
    d.ok(&["cp", "src:/data/file", &s(&h.join("into"))]);
    assert_eq!(read(&h.join("into/file")), "file\n");
    std::fs::write(h.join("over"), "old contents, longer than the new").unwrap();
    d.ok(&["cp", "src:data/file", &s(&h.join("over"))]);
    assert_eq!(read(&h.join("over")), "file\n");

    // A directory: to a new name it becomes that directory; into an existing one it lands
    // inside; with a trailing `/.` only its contents are copied. Modes are kept.
    d.ok(&["cp", "src:/data/dir", &s(&h.join("newdir"))]);
    assert_eq!(read(&h.join("newdir/sub/b")), "b\n");
    assert_eq!(
        std::fs::metadata(h.join("newdir/a")).unwrap().mode() & 0o7777,
        0o751
    );
    std::fs::create_dir(h.join("existing")).unwrap();
    d.ok(&["cp", "src:/data/dir", &s(&h.join("existing"))]);
    assert_eq!(read(&h.join("existing/dir/a")), "a\n");
    std::fs::create_dir(h.join("contents")).unwrap();
    d.ok(&["cp", "src:/data/dir/.", &s(&h.join("contents"))]);
    assert_eq!(read(&h.join("contents/a")), "a\n");
    assert_eq!(read(&h.join("contents/sub/b")), "b\n");
    assert!(!h.join("contents/dir").exists());

    // A name that is not ASCII (its stat cannot travel in a header).
    d.ok(&["cp", "src:/data/dir/sub/\u{fc}n\u{ef}", &s(h)]);
    assert_eq!(read(&h.join("\u{fc}n\u{ef}")), "u\n");

    // Refusals, with docker's exit status 1 and a message naming what was wrong.
    let (code, _, err) = run(&d, &["cp", "src:/data/dir", &s(&h.join("renamed"))]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot overwrite non-directory"), "{err}");
    let (code, _, err) = run(&d, &["cp", "src:/data/file/", &s(&h.join("x"))]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a directory"), "{err}");
    let (code, _, err) = run(&d, &["cp", "src:/nope", &s(&h.join("x"))]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no such file or directory") && err.contains("/nope"),
        "{err}"
    );
    let (code, _, err) = run(&d, &["cp", "src:/data/file", &s(&h.join("missing/dir/"))]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&d, &["cp", "ghost:/etc/hosts", &s(h)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("no such container"), "{err}");
    assert!(!h.join("x").exists());

    // A stopped container's files can still be copied.
    d.ok(&["stop", "-t", "1", "src"]);
    d.ok(&["cp", "src:/data/dir/sub/b", &s(&h.join("after-stop"))]);
    assert_eq!(read(&h.join("after-stop")), "b\n");
}

#[test]
fn copies_into_a_container_with_dockers_path_rules() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    container(&d, &image, "dst", "mkdir -p /in && echo keep > /in/old");
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir_all(h.join("tree/sub")).unwrap();
    std::fs::write(h.join("tree/a"), "a").unwrap();
    std::fs::write(h.join("tree/sub/b"), "b").unwrap();
    std::fs::write(h.join("f"), "f").unwrap();
    let cat = |p: &str| d.ok(&["exec", "dst", "cat", p]);

    d.ok(&["cp", &s(&h.join("f")), "dst:/in"]);
    assert_eq!(cat("/in/f"), "f");
    d.ok(&["cp", &s(&h.join("f")), "dst:/in/renamed"]);
    assert_eq!(cat("/in/renamed"), "f");
    d.ok(&["cp", &s(&h.join("f")), "dst:/in/old"]);
    assert_eq!(cat("/in/old"), "f");
    d.ok(&["cp", &s(&h.join("tree")), "dst:/in"]);
    assert_eq!(cat("/in/tree/sub/b"), "b");
    d.ok(&["cp", &s(&h.join("tree")), "dst:/newtree"]);
    assert_eq!(cat("/newtree/a"), "a");
    d.ok(&["cp", &format!("{}/.", s(&h.join("tree"))), "dst:/in"]);
    assert_eq!(cat("/in/a"), "a");
    assert_eq!(cat("/in/sub/b"), "b");

    let (code, _, err) = run(&d, &["cp", &s(&h.join("tree")), "dst:/in/f"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot overwrite non-directory"), "{err}");
    let (code, _, err) = run(&d, &["cp", &s(&h.join("f")), "dst:/nodir/"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(&d, &["cp", &s(&h.join("f")), "dst:/no/such/parent"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such file or directory"), "{err}");
    let (code, _, err) = run(&d, &["cp", &s(&h.join("missing")), "dst:/in"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing"), "{err}");

    let (code, _, err) = run(&d, &["cp", &s(&h.join("f")), "ghost:/in"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("no such container"), "{err}");
    // A read-only root filesystem is refused, with the reason.
    d.ok(&[
        "run",
        "-d",
        "--read-only",
        "--name",
        "ro",
        &image,
        "sleep",
        "1000",
    ]);
    let (code, _, err) = run(&d, &["cp", &s(&h.join("f")), "ro:/"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Read-only file system"), "{err}");

    // Into a stopped container too; seen once it runs again is not possible (no restart), so
    // the copy is read back out.
    d.ok(&["stop", "-t", "1", "dst"]);
    d.ok(&["cp", &s(&h.join("f")), "dst:/in/while-stopped"]);
    d.ok(&["cp", "dst:/in/while-stopped", &s(&h.join("back"))]);
    assert_eq!(read(&h.join("back")), "f");
}

#[test]
fn hostile_symlinks_in_the_container_cannot_make_cp_read_outside_its_root() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    // A host file the container's links point at; its contents must never be copied.
    let canary = tempfile::tempdir().unwrap();
    std::fs::write(canary.path().join("secret"), "HOST SECRET").unwrap();
    let secret = s(&canary.path().join("secret"));
    let setup = format!(
        "echo container-shadow > /etc/shadow && ln -s /etc/shadow /abs \
         && ln -s ../../../../../../etc/shadow /rel && ln -s / /escape \
         && ln -s {secret} /hostpath && mkdir /d && ln -s /etc /d/etc"
    );
    container(&d, &image, "evil", &setup);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();

    // Without -L a symlink is copied as a symlink, pointing where it pointed.
    d.ok(&["cp", "evil:/abs", &s(&h.join("abs"))]);
    assert_eq!(
        std::fs::read_link(h.join("abs")).unwrap(),
        Path::new("/etc/shadow")
    );
    // With -L it is followed inside the container's root: the container's file, never the
    // host's /etc/shadow.
    for link in ["/abs", "/rel"] {
        let out = h.join(format!("followed{}", link.replace('/', "-")));
        d.ok(&["cp", "-L", &format!("evil:{link}"), &s(&out)]);
        assert_eq!(read(&out), "container-shadow\n", "{link}");
    }
    d.ok(&["cp", "evil:/escape/etc/shadow", &s(&h.join("through"))]);
    assert_eq!(read(&h.join("through")), "container-shadow\n");
    // A link to a host path resolves to the same path inside the root, which does not exist.
    let (code, _, err) = run(&d, &["cp", "-L", "evil:/hostpath", &s(&h.join("leak"))]);
    assert_eq!(code, 1, "{err}");
    assert!(!h.join("leak").exists());
    let (code, _, err) = run(
        &d,
        &["cp", &format!("evil:/escape{secret}"), &s(&h.join("leak"))],
    );
    assert_eq!(code, 1, "{err}");
    assert!(!h.join("leak").exists());
    // A directory walk archives links as links and does not descend into them.
    d.ok(&["cp", "evil:/d", &s(&h.join("d"))]);
    assert!(std::fs::symlink_metadata(h.join("d/etc"))
        .unwrap()
        .file_type()
        .is_symlink());
    // The whole root: still only links, and the host's secret appears nowhere.
    let (code, tar, err) = run_bytes(&d, &["cp", "evil:/", "-"]);
    assert_eq!(code, 0, "{err}");
    assert!(!tar.windows(11).any(|w| w == b"HOST SECRET"));
    // The running container's /proc and /sys are mount points, archived empty.
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "proc"), "{names:?}");
    assert!(!names
        .iter()
        .any(|n| n.starts_with("proc/") || n.starts_with("sys/")));
}

#[test]
fn hostile_symlinks_cannot_make_cp_write_outside_the_containers_root() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let canary = tempfile::tempdir().unwrap();
    let target = s(canary.path());
    let setup = format!(
        "ln -s {target} /trap && ln -s / /escape && ln -s ../../../../../../{target} /rel \
         && mkdir -p {target}"
    );
    container(&d, &image, "evil", &setup);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::write(h.join("payload"), "pwned").unwrap();

    // Destinations through the container's links land inside its root (where the same path
    // exists, created by the setup), never in the host's directory.
    for dest in ["evil:/trap", "evil:/rel", &format!("evil:/escape{target}")] {
        d.ok(&["cp", &s(&h.join("payload")), dest]);
    }
    d.ok(&["cp", &s(&h.join("payload")), "evil:/trap/renamed"]);
    assert_eq!(
        d.ok(&["exec", "evil", "cat", &format!("{target}/payload")]),
        "pwned"
    );
    assert_eq!(
        std::fs::read_dir(canary.path()).unwrap().count(),
        0,
        "cp wrote into the host directory"
    );

    // An archive that plants a symlink to the host directory and then writes through it is
    // refused (the link resolves inside the root, where it dangles), and one with `..` names
    // stays inside the container.
    let hostile = |entries: &[(&str, Option<&Path>)]| {
        let mut b = tar::Builder::new(Vec::new());
        for (name, link) in entries {
            let mut hdr = tar::Header::new_gnu();
            match link {
                Some(target) => {
                    hdr.set_entry_type(tar::EntryType::Symlink);
                    hdr.set_size(0);
                    hdr.set_mode(0o777);
                    hdr.set_link_name_literal(target.as_os_str().as_encoded_bytes())
                        .unwrap();
                }
                None => {
                    hdr.set_size(5);
                    hdr.set_mode(0o644);
                }
            }
            // The raw name in the header, as a hostile tar has it (`append_data` refuses `..`).
            hdr.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            hdr.set_cksum();
            let data: &[u8] = if link.is_some() { b"" } else { b"pwned" };
            b.append(&hdr, data).unwrap();
        }
        b.into_inner().unwrap()
    };
    d.ok(&["exec", "evil", "mkdir", "/drop"]);
    let tar = hostile(&[("link", Some(canary.path())), ("link/through-link", None)]);
    let (code, _, err) = run_with_stdin(&d, &["cp", "-", "evil:/drop"], &tar);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("link/through-link"), "{err}");
    let tar = hostile(&[("../../../../../../tmp/dotdot", None)]);
    let (code, _, err) = run_with_stdin(&d, &["cp", "-", "evil:/drop"], &tar);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(canary.path()).unwrap().count(), 0);
    assert!(!Path::new("/tmp/dotdot").exists());
    assert_eq!(d.ok(&["exec", "evil", "cat", "/drop/tmp/dotdot"]), "pwned");
}

#[test]
fn a_running_containers_volumes_and_generated_files_are_copied_as_it_sees_them() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("in-volume"), "from the volume").unwrap();
    let v = format!("{}:/vol", s(vol.path()));
    d.ok(&[
        "run", "-d", "--name", "m", "-v", &v, &image, "sleep", "1000",
    ]);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    d.ok(&["cp", "m:/vol/in-volume", &s(&h.join("got"))]);
    assert_eq!(read(&h.join("got")), "from the volume");
    std::fs::write(h.join("new"), "into the volume").unwrap();
    d.ok(&["cp", &s(&h.join("new")), "m:/vol"]);
    assert_eq!(read(&vol.path().join("new")), "into the volume");
    // The generated /etc/hosts the container reads, not the image's.
    d.ok(&["cp", "m:/etc/hosts", &s(&h.join("hosts"))]);
    assert_eq!(
        read(&h.join("hosts")),
        d.ok(&["exec", "m", "cat", "/etc/hosts"])
    );
}

/// The CLI's raw stdout (a tar is not UTF-8).
fn run_bytes(d: &TestDaemon, args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = d.cli(args);
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tar_streams_archive_mode_and_follow_link() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    container(&d, &image, "t", TREE);
    let host = tempfile::tempdir().unwrap();
    let h = host.path();

    // `cp CTR:SRC -`: a tar of SRC on stdout, its top entry named after SRC.
    let (code, tar, err) = run_bytes(&d, &["cp", "t:/data/dir", "-"]);
    assert_eq!(code, 0, "{err}");
    let mut a = tar::Archive::new(&tar[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"dir".to_string()), "{names:?}");
    assert!(names.contains(&"dir/sub/b".to_string()), "{names:?}");

    // `cp - CTR:DIR`: that tar unpacked into a directory of the container.
    d.ok(&["exec", "t", "mkdir", "/fromtar"]);
    let (code, _, err) = run_with_stdin(&d, &["cp", "-", "t:/fromtar"], &tar);
    assert_eq!(code, 0, "{err}");
    assert_eq!(d.ok(&["exec", "t", "cat", "/fromtar/dir/sub/b"]), "b\n");
    let (code, _, err) = run_with_stdin(&d, &["cp", "-", "t:/data/file"], &tar);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("must be an existing directory"), "{err}");
    let (code, _, err) = run_with_stdin(&d, &["cp", "-", "t:/fromtar"], b"not a tar at all");
    assert_ne!(code, 0, "{err}");

    // -a keeps uid/gid; without it the files belong to root, as docker does.
    std::fs::write(h.join("owned"), "o").unwrap();
    nix::unistd::chown(
        &h.join("owned"),
        Some(nix::unistd::Uid::from_raw(1234)),
        Some(nix::unistd::Gid::from_raw(5678)),
    )
    .unwrap();
    d.ok(&["cp", "-a", &s(&h.join("owned")), "t:/kept"]);
    d.ok(&["cp", &s(&h.join("owned")), "t:/rooted"]);
    let ls = d.ok(&["exec", "t", "ls", "-ln", "/kept", "/rooted"]);
    let owner = |name: &str| {
        let l = ls
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{ls}"));
        let f: Vec<&str> = l.split_whitespace().collect();
        format!("{}:{}", f[2], f[3])
    };
    assert_eq!(owner("/kept"), "1234:5678", "{ls}");
    assert_eq!(owner("/rooted"), "0:0", "{ls}");

    // -L on the host side: the link's target is copied under the link's name.
    std::fs::write(h.join("real"), "target contents").unwrap();
    symlink(h.join("real"), h.join("link")).unwrap();
    d.ok(&["cp", &s(&h.join("link")), "t:/aslink"]);
    d.ok(&["cp", "-L", &s(&h.join("link")), "t:/followed"]);
    assert_eq!(
        d.ok(&["exec", "t", "readlink", "/aslink"]).trim(),
        s(&h.join("real"))
    );
    assert_eq!(d.ok(&["exec", "t", "cat", "/followed"]), "target contents");
}

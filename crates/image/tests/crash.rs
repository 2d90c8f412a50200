//! SIGKILL in the middle of writing a blob and of unpacking a snapshot: afterwards no partial
//! blob is visible as complete, the partial download resumes, and the half-unpacked snapshot
//! is cleaned up and re-created.
//!
//! The victim is this test binary re-executed to run `crash_victim` (an ignored helper that
//! only does something when `ZLAYER_CRASH_ROOT` is set).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zlayer_image::content::ContentStore;
use zlayer_image::snapshot::SnapshotStore;
use zlayer_image::Digest;

const CHUNK: usize = 256 << 10;
const TOTAL_CHUNKS: usize = 64;

fn data() -> Vec<u8> {
    (0..CHUNK * TOTAL_CHUNKS)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[2])
        .collect()
}

fn chain() -> Digest {
    Digest::of_bytes(b"crash-test-chain")
}

/// Run by the parent in a child process; writes slowly until killed.
#[test]
#[ignore = "helper: runs only as the SIGKILL victim of sigkill_mid_ingest_and_mid_unpack"]
fn crash_victim() {
    let Some(root) = std::env::var_os("ZLAYER_CRASH_ROOT") else {
        return;
    };
    let root = Path::new(&root);
    let data = data();
    let d = Digest::of_bytes(&data);
    let cs = ContentStore::open(root).unwrap();
    let mut ing = cs.ingest(&d, Some(data.len() as u64)).unwrap();
    for chunk in data.chunks(CHUNK).take(TOTAL_CHUNKS / 2) {
        ing.write_all(chunk).unwrap();
        ing.flush().unwrap();
    }
    // Half written: now hang in a snapshot fill until killed.
    let snaps = SnapshotStore::open(root).unwrap();
    snaps
        .create(&chain(), None, |dir| {
            std::fs::write(dir.join("half-unpacked"), b"x")?;
            std::fs::write(root.join("victim-ready"), b"")?;
            loop {
                std::thread::sleep(Duration::from_millis(50));
            }
            #[allow(unreachable_code)]
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
}

#[test]
fn sigkill_mid_ingest_and_mid_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "crash_victim", "--nocapture"])
        .env("ZLAYER_CRASH_ROOT", root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !root.join("victim-ready").exists() {
        assert!(Instant::now() < deadline, "victim never got ready");
        assert!(child.try_wait().unwrap().is_none(), "victim exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the pid of our own child process.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0);
    child.wait().unwrap();

    let data = data();
    let d = Digest::of_bytes(&data);
    let cs = ContentStore::open(root).unwrap();
    assert!(!cs.contains(&d), "a partial blob is visible as complete");
    assert!(cs.list().unwrap().is_empty());
    let mut ing = cs.ingest(&d, Some(data.len() as u64)).unwrap();
    let off = ing.offset() as usize;
    assert_eq!(
        off,
        CHUNK * TOTAL_CHUNKS / 2,
        "the partial download resumes"
    );
    ing.write_all(&data[off..]).unwrap();
    ing.commit().unwrap();
    assert_eq!(std::fs::read(cs.blob_path(&d)).unwrap(), data);

    let snaps = SnapshotStore::open(root).unwrap();
    assert!(snaps.get(&chain()).unwrap().is_none());
    let leftovers: Vec<_> = std::fs::read_dir(snaps.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n != "locks")
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-unpacked snapshot left: {leftovers:?}"
    );
    let s = snaps
        .create(&chain(), None, |dir| {
            std::fs::write(dir.join("complete"), b"y")
        })
        .unwrap();
    assert!(s.path.join("complete").exists());
    assert!(!s.path.join("half-unpacked").exists());
}

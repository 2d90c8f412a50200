//! Integration tests with real containers, run through the real shim.
//!
//! `harness = false`: this binary is also the shim. When called as `<test-binary> shim
//! ...` (what `spawn_shim` runs, via `current_exe`) it acts as `zlayer-agent shim`, so
//! the tests exercise the same code path as the daemon without depending on the CLI
//! package. Needs root, overlayfs and Debian's busybox-static; under `CI=true` a missing
//! prerequisite fails the run, otherwise the tests are skipped with the reason printed.

mod cgroup_v2;
mod fixture;
mod tests;

use std::ffi::OsString;

fn prerequisites() -> Result<(), String> {
    if !nix_is_root() {
        return Err("tests need root (they create containers)".into());
    }
    if !std::path::Path::new(fixture::BUSYBOX).exists() {
        return Err(format!(
            "{} missing: apt install busybox-static",
            fixture::BUSYBOX
        ));
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("overlay") {
        return Err("the kernel has no overlayfs".into());
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "shim") {
        std::process::exit(zlayer_runtime::shim::main(argv[2..].to_vec()));
    }
    if argv.get(1).is_some_and(|a| a == "cgroup-v2") {
        std::process::exit(cgroup_v2::helper_main(&argv[2..]));
    }
    if argv.get(1).is_some_and(|a| a == "spawn-helper") {
        std::process::exit(tests::spawn_helper(&argv[2..]));
    }
    let args = libtest_mimic::Arguments::from_args();
    if let Err(why) = prerequisites() {
        if std::env::var("CI").as_deref() == Ok("true") {
            eprintln!("FAIL: prerequisite missing under CI=true: {why}");
            std::process::exit(1);
        }
        eprintln!("skipping container tests: {why}");
        return;
    }
    let conclusion = libtest_mimic::run(&args, tests::all());
    let _ = std::fs::remove_dir_all(fixture::base());
    remove_parent_cgroups();
    conclusion.exit();
}

/// The containers' cgroups are gone (the shims delete them); remove their empty parent.
fn remove_parent_cgroups() {
    let rel = fixture::CGROUP_PARENT.trim_start_matches('/');
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path().join(rel));
        }
    }
    let _ = std::fs::remove_dir(std::path::Path::new("/sys/fs/cgroup").join(rel));
}

//! Prerequisite checks for tests that need real parts (root, binaries, kernel features).
//!
//! The project rule: under `CI=true` a missing prerequisite must make the test FAIL,
//! never silently pass. Outside CI a developer without e.g. `skopeo` gets a printed
//! "skipping: ..." line and the test returns early.
//!
//! Typical use in a test:
//! ```no_run
//! # fn t() {
//! zlayer_testkit::require_root!();
//! let skopeo = zlayer_testkit::require_bin!("skopeo");
//! # let _ = skopeo;
//! # }
//! ```

use std::path::{Path, PathBuf};

/// Directories searched by [`find_bin`] after `$PATH`: sbin dirs are often missing from a
/// test's PATH, and CNI plugins live outside PATH entirely.
pub const EXTRA_BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/lib/cni",
    "/opt/cni/bin",
];

/// True when the environment says we run in CI (`CI=true`, case-insensitive, or `CI=1`).
pub fn in_ci() -> bool {
    match std::env::var("CI") {
        Ok(v) => v.eq_ignore_ascii_case("true") || v == "1",
        Err(_) => false,
    }
}

/// Core of every check: `ok` tells whether the prerequisite `what` is present.
///
/// Returns `true` when present. When missing: panics under CI (so the test fails with a
/// message naming what is missing), otherwise prints `skipping: <what>` and returns `false`.
#[track_caller]
pub fn require(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("missing test prerequisite under CI=true: {what}");
    }
    eprintln!("skipping: {what} (set CI=true to make this a failure)");
    false
}

/// True when the current process has effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Requires root; see [`require`].
#[track_caller]
pub fn require_root() -> bool {
    require("test needs root (effective uid 0)", is_root())
}

/// Finds an executable by name in `$PATH` and then in [`EXTRA_BIN_DIRS`].
/// A name containing `/` is checked as a path as is.
pub fn find_bin(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
        Err(_) => false,
    }
}

/// Requires an executable; returns its path when found; see [`require`].
#[track_caller]
pub fn require_bin(name: &str) -> Option<PathBuf> {
    let found = find_bin(name);
    let what = format!("test needs the `{name}` binary (searched $PATH and {EXTRA_BIN_DIRS:?})");
    if require(&what, found.is_some()) {
        found
    } else {
        None
    }
}

/// True when the running kernel lists `fs` (e.g. "overlay") in /proc/filesystems.
pub fn has_filesystem(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(fs)))
        .unwrap_or(false)
}

/// Requires a kernel filesystem type; see [`require`].
#[track_caller]
pub fn require_filesystem(fs: &str) -> bool {
    require(
        &format!("test needs kernel filesystem `{fs}` (not in /proc/filesystems)"),
        has_filesystem(fs),
    )
}

/// Value a test function returns when it skips: `()` or `Ok(())`. Lets the `require_*!`
/// macros `return` from tests returning either `()` or `Result<(), E>`.
pub trait SkipValue {
    /// The value returned from a skipped test.
    fn skip_value() -> Self;
}

impl SkipValue for () {
    fn skip_value() -> Self {}
}

impl<E> SkipValue for Result<(), E> {
    fn skip_value() -> Self {
        Ok(())
    }
}

/// `require!(ok, "what")`: returns from the calling test when `ok` is false (panics under CI).
#[macro_export]
macro_rules! require {
    ($ok:expr, $($what:tt)+) => {
        if !$crate::prereq::require(&format!($($what)+), $ok) {
            return $crate::prereq::SkipValue::skip_value();
        }
    };
}

/// `require_root!()`: returns from the calling test unless running as root (panics under CI).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::prereq::require_root() {
            return $crate::prereq::SkipValue::skip_value();
        }
    };
}

/// `let p = require_bin!("skopeo");` evaluates to the binary's `PathBuf`, or returns from the
/// calling test when it is missing (panics under CI).
#[macro_export]
macro_rules! require_bin {
    ($name:expr) => {
        match $crate::prereq::require_bin($name) {
            Some(p) => p,
            None => return $crate::prereq::SkipValue::skip_value(),
        }
    };
}

/// `require_filesystem!("overlay")`: returns from the calling test unless the kernel
/// supports that filesystem (panics under CI).
#[macro_export]
macro_rules! require_filesystem {
    ($fs:expr) => {
        if !$crate::prereq::require_filesystem($fs) {
            return $crate::prereq::SkipValue::skip_value();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_bin("sh").is_some());
        assert!(find_bin("definitely-not-a-binary-zlayer").is_none());
    }

    #[test]
    fn present_prerequisite_passes() {
        assert!(require("always there", true));
    }

    fn skipped_unit() {
        require!(false, "a {} prerequisite", "missing");
        panic!("must not reach here");
    }

    fn skipped_result() -> anyhow::Result<()> {
        let _p = require_bin!("definitely-not-a-binary-zlayer");
        anyhow::bail!("must not reach here")
    }

    #[test]
    fn missing_prerequisite_skips_or_fails_under_ci() {
        if in_ci() {
            let r = std::panic::catch_unwind(skipped_unit);
            assert!(r.is_err(), "under CI a missing prerequisite must panic");
        } else {
            skipped_unit();
            skipped_result().unwrap();
        }
    }
}

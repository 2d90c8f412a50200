//! The daemon and the CLI's connection to it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{stderr, TestDaemon, BIN};

#[test]
fn cli_talks_to_the_daemon_over_its_socket() {
    let d = TestDaemon::start();
    let out = d.ok(&["version"]);
    assert!(out.contains("Daemon: zlayer-agent"), "{out}");
    assert!(out.contains(&d.root().display().to_string()), "{out}");
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the API socket must be 0660");
}

#[test]
fn cli_says_how_to_start_a_missing_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--socket"])
        .arg(dir.path().join("nope.sock"))
        .arg("version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the zlayer-agent daemon"),
        "{err}"
    );
    assert!(err.contains("zlayer-agent daemon"), "{err}");
}

#[test]
fn socket_comes_from_the_environment_too() {
    let d = TestDaemon::start();
    let out = std::process::Command::new(BIN)
        .env("ZLAYER_AGENT_SOCKET", d.socket())
        .arg("version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn two_daemons_never_share_a_root() {
    let d = TestDaemon::start();
    let out = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(d.dir.path().join("other.sock"))
        .arg("daemon")
        .arg("--root")
        .arg(d.root())
        .arg("--state")
        .arg(d.dir.path().join("other-state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("another zlayer-agent daemon is already using"),
        "{}",
        stderr(&out)
    );
    // The first daemon is unaffected.
    d.ok(&["version"]);
}

#[test]
fn bad_config_file_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        "{\n  \"registries\": { \"insecure\": [\"a\"] },\n  \"bogus\": 1\n}\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("daemon")
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:", cfg.display())), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

/// `zlayer-agent version | head -0`: a closed stdout ends the CLI quietly with 141 (what a
/// SIGPIPE death shows), not with a panic and a backtrace.
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    let d = TestDaemon::start();
    let (r, w) = nix::unistd::pipe().expect("pipe");
    drop(r);
    let stdout = std::process::Stdio::from(w);
    let out = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(d.socket())
        .arg("version")
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running the CLI");
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert_eq!(stderr(&out), "", "nothing on stderr");
}

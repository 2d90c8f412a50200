//! `top` with real containers: the container's processes only, docker's default columns,
//! ps options passed through.

mod common;

use common::{daemon_with_busybox, run};

#[test]
fn top_lists_the_containers_processes_ps_style() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        &image,
        "sh",
        "-c",
        "sleep 1000 & sleep 1001 & wait",
    ]);
    let ok = common::eventually(20, || d.ok(&["top", "busy"]).contains("sleep 1001"));
    assert!(ok, "{}", d.log());
    let out = d.ok(&["top", "busy"]);
    let mut lines = out.lines();
    let titles: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "{out}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.len(),
        3,
        "sh and two sleeps, nothing of the host:\n{out}"
    );
    assert!(
        rows.iter()
            .any(|r| r.ends_with("sh -c sleep 1000 & sleep 1001 & wait")),
        "{out}"
    );
    assert!(rows.iter().any(|r| r.ends_with("sleep 1000")), "{out}");
    // The PIDs are the host's, and each is the container's (its pid from inspect is one).
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "busy"])).unwrap();
    let init = v[0]["pid"].as_i64().unwrap().to_string();
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().nth(1) == Some(init.as_str())),
        "{out}"
    );

    // ps options pass through.
    let out = d.ok(&["top", "busy", "-o", "pid,comm"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    let comms: Vec<&str> = lines
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(comms, ["sh", "sleep", "sleep"], "{out}");

    // Refusals: no PID column, a bad ps option, not running, no such container; exit 1.
    let (code, _, err) = run(&d, &["top", "busy", "-o", "comm"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no PID column"), "{err}");
    let (code, _, err) = run(&d, &["top", "busy", "--no-such-ps-option"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ps --no-such-ps-option failed"), "{err}");
    d.ok(&["kill", "busy"]);
    d.ok(&["wait", "busy"]);
    let (code, _, err) = run(&d, &["top", "busy"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not running"), "{err}");
    let (code, _, err) = run(&d, &["top", "ghost"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ghost"), "{err}");
}

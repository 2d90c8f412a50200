//! `ps`/`images` `--format` templates and `--filter`, `logs --since/--until/--timestamps`,
//! with real containers (issue 13, lane "logsfmt").

mod common;

use common::{daemon_with_busybox, run};

#[test]
fn ps_format_templates_print_dockers_placeholders() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        &image,
        "sleep",
        "100",
    ]);
    let id = id.trim();
    assert_eq!(d.ok(&["ps", "--format", "{{.Names}}"]), "web\n");
    assert_eq!(
        d.ok(&["ps", "--format", r#"{{.Names}}={{.Label "tier"}}"#]),
        "web=front\n"
    );
    let out = d.ok(&["ps", "--format", r"{{.ID}}\t{{.Status}}"]);
    let (short, status) = out.trim_end().split_once('\t').expect(&out);
    assert_eq!(short, &id[..12]);
    assert!(status.starts_with("Up "), "{out}");
    let out = d.ok(&["ps", "--format", r"table {{.ID}}\t{{.Image}}\t{{.Labels}}"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("CONTAINER ID"), "{out}");
    assert!(
        lines[0].contains("IMAGE") && lines[0].contains("LABELS"),
        "{out}"
    );
    assert!(lines[1].starts_with(&id[..12]), "{out}");
    assert!(
        lines[1].contains(&image) && lines[1].ends_with("tier=front"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "--format", "{{json .}}"])).unwrap();
    assert_eq!(json["Names"], "web");
    assert_eq!(json["State"], "running");
    assert_eq!(json["Command"], "\"sleep 100\"");
    // -q prints ids; a template given beside it wins, as in docker.
    assert_eq!(d.ok(&["ps", "-q"]).trim(), &id[..12]);
    assert_eq!(d.ok(&["ps", "-q", "--format", "{{.Names}}"]), "web\n");
    // The older `--format json` keeps printing the API's objects.
    let list: serde_json::Value = serde_json::from_str(&d.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(list[0]["id"], id);
    // An unknown field is named, and nothing is printed.
    let (code, out, err) = run(&d, &["ps", "--format", "{{.Nmes}}"]);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(".Nmes"), "{err}");
    let (code, _, err) = run(&d, &["ps", "--format", "{{upper .Names}}"]);
    assert_ne!(code, 0);
    assert!(err.contains("upper"), "{err}");
    d.ok(&["rm", "-f", "web"]);
}

#[test]
fn images_format_templates_print_dockers_placeholders() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let out = d.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let short = image.strip_prefix("docker.io/library/").unwrap_or(&image);
    assert!(out.lines().any(|l| l == short), "{short} in {out}");
    let names = out.lines().count();
    let out = d.ok(&["images", "--format", r"table {{.ID}}\t{{.Size}}"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), names + 1, "{out}");
    assert!(
        lines[0].starts_with("IMAGE ID") && lines[0].contains("SIZE"),
        "{out}"
    );
    let out = d.ok(&["images", "--format", "{{json .}}"]);
    let json: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(
        json["Digest"].as_str().unwrap().starts_with("sha256:"),
        "{json}"
    );
    assert_eq!(json["ID"].as_str().unwrap().len(), 12, "{json}");
    let (code, _, err) = run(&d, &["images", "--format", "{{.Names}}"]);
    assert_ne!(code, 0);
    assert!(err.contains(".Names"), "{err}");
}

/// The names `ps` prints for `args`, sorted.
fn ps_names(d: &common::TestDaemon, args: &[&str]) -> Vec<String> {
    let mut all = vec!["ps", "--format", "{{.Names}}"];
    all.extend_from_slice(args);
    let mut names: Vec<String> = d.ok(&all).lines().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn ps_filter_has_dockers_semantics() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let web = d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "-l",
        "team=a",
        &image,
        "sleep",
        "100",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "api",
        "-l",
        "tier=back",
        "-l",
        "team=a",
        &image,
        "sleep",
        "100",
    ]);
    let (code, _, err) = run(
        &d,
        &[
            "run",
            "--name",
            "job",
            "-l",
            "tier=batch",
            &image,
            "sh",
            "-c",
            "exit 3",
        ],
    );
    assert_eq!(code, 3, "{err}");
    let none: Vec<String> = Vec::new();
    assert_eq!(ps_names(&d, &["--filter", "name=web"]), ["web"]);
    // Same key ORs.
    assert_eq!(
        ps_names(&d, &["-f", "name=web", "-f", "name=api"]),
        ["api", "web"]
    );
    // Different keys AND.
    assert_eq!(
        ps_names(&d, &["-f", "name=web", "-f", "label=tier=back"]),
        none
    );
    assert_eq!(ps_names(&d, &["-f", "label=team=a"]), ["api", "web"]);
    assert_eq!(ps_names(&d, &["-f", "label=team"]), ["api", "web"]);
    // Every label given must be present, as docker.
    assert_eq!(
        ps_names(&d, &["-f", "label=team=a", "-f", "label=tier=front"]),
        ["web"]
    );
    // A status filter shows stopped containers without -a.
    assert_eq!(ps_names(&d, &["-f", "status=exited"]), ["job"]);
    assert_eq!(
        ps_names(&d, &["-a", "-f", "status=running"]),
        ["api", "web"]
    );
    assert_eq!(
        ps_names(&d, &["-f", &format!("id={}", &web.trim()[..8])]),
        ["web"]
    );
    assert_eq!(
        ps_names(&d, &["-a", "-f", &format!("ancestor={image}")]),
        ["api", "job", "web"]
    );
    assert_eq!(ps_names(&d, &["-a", "-f", "ancestor=alpine"]), none);
    // Filtering happens in the agent: the REST API answers the same.
    let (code, _, err) = run(&d, &["ps", "-f", "colour=red"]);
    assert_ne!(code, 0);
    assert!(err.contains("colour"), "{err}");
    let (code, _, err) = run(&d, &["ps", "-f", "status=sleepy"]);
    assert_ne!(code, 0);
    assert!(err.contains("status=sleepy"), "{err}");
    let (code, _, err) = run(&d, &["ps", "-f", "nameweb"]);
    assert_ne!(code, 0);
    assert!(err.contains("nameweb"), "{err}");
    d.ok(&["rm", "-f", "web", "api", "job"]);
}

/// `logs --timestamps` lines as (time, text).
fn stamped(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let (t, text) = l.split_once(' ').expect(l);
            (t.to_string(), text.to_string())
        })
        .collect()
}

fn texts(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn logs_since_until_and_timestamps_select_by_time() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    let script = "echo a; sleep 1; echo b; sleep 1; echo c";
    d.ok(&["run", "--name", "abc", &image, "sh", "-c", script]);
    let lines = stamped(&d.ok(&["logs", "--timestamps", "abc"]));
    let got: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(got, ["a", "b", "c"]);
    let tb = lines[1].0.as_str();
    assert!(
        tb.contains('T') && tb.ends_with('Z'),
        "RFC 3339 in UTC: {tb}"
    );
    // RFC 3339 bounds are inclusive, as docker's.
    assert_eq!(texts(&d.ok(&["logs", "--since", tb, "abc"])), ["b", "c"]);
    assert_eq!(texts(&d.ok(&["logs", "--until", tb, "abc"])), ["a", "b"]);
    assert_eq!(
        texts(&d.ok(&["logs", "--since", tb, "--until", tb, "abc"])),
        ["b"]
    );
    // Both with --timestamps keep the prefix.
    let only_b = stamped(&d.ok(&["logs", "-t", "--since", tb, "--until", tb, "abc"]));
    assert_eq!(only_b, [(tb.to_string(), "b".to_string())]);
    // Relative durations and Unix seconds.
    assert_eq!(
        texts(&d.ok(&["logs", "--since", "1h", "abc"])),
        ["a", "b", "c"]
    );
    assert_eq!(
        texts(&d.ok(&["logs", "--until", "1h", "abc"])),
        Vec::<&str>::new()
    );
    assert_eq!(
        texts(&d.ok(&["logs", "--since", "1h30m", "--until", "0s", "abc"])),
        ["a", "b", "c"]
    );
    let unix_later = (std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    assert_eq!(
        texts(&d.ok(&["logs", "--since", &unix_later, "abc"])),
        Vec::<&str>::new()
    );
    // --tail still counts from the end of what is kept.
    assert_eq!(
        texts(&d.ok(&["logs", "--tail", "1", "--until", tb, "abc"])),
        Vec::<&str>::new()
    );
    // Bad values name the flag and the value.
    let (code, _, err) = run(&d, &["logs", "--since", "yesterday", "abc"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--since") && err.contains("yesterday"),
        "{err}"
    );
    d.ok(&["rm", "abc"]);
}

#[test]
fn logs_follow_ends_at_until() {
    let Some((d, image)) = daemon_with_busybox() else {
        return;
    };
    d.ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        &image,
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.5; done",
    ]);
    let until = (std::time::SystemTime::now() + std::time::Duration::from_secs(3))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let until = format!("{until:.3}");
    let (code, out, err, took) = common::run_within(
        &d,
        &["logs", "-f", "-t", "--until", &until, "ticker"],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{err}");
    assert!(took < std::time::Duration::from_secs(45), "took {took:?}");
    let lines = stamped(&out);
    assert!(!lines.is_empty(), "{out}");
    assert!(lines.iter().all(|(_, t)| t == "tick"), "{out}");
    // A follow with --until in the past ends at once, with what the window holds.
    let (code, _, err, took) = common::run_within(
        &d,
        &["logs", "-f", "--until", "1h", "ticker"],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{err}");
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    d.ok(&["rm", "-f", "ticker"]);
}

/// The `Repository:Tag` lines of `images` with `args`, sorted.
fn image_names(d: &common::TestDaemon, args: &[&str]) -> Vec<String> {
    let mut all = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
    all.extend_from_slice(args);
    let mut names: Vec<String> = d.ok(&all).lines().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn images_filter_has_dockers_semantics() {
    let Some((d, _image)) = daemon_with_busybox() else {
        return;
    };
    // A second image, `rules`, first tagged dangle:1; loading busybox under the same tag
    // leaves `rules` without a name: dangling.
    let tmp = tempfile::tempdir().unwrap();
    let rules = zlayer_testkit::cached("rules").unwrap();
    let busybox = zlayer_testkit::cached("busybox").unwrap();
    let rules_tar = tmp.path().join("rules.tar");
    let busybox_tar = tmp.path().join("busybox.tar");
    zlayer_testkit::fixtures::archive::write_docker_save(&rules, "dangle:1", &rules_tar).unwrap();
    zlayer_testkit::fixtures::archive::write_docker_save(&busybox, "dangle:1", &busybox_tar)
        .unwrap();
    d.ok(&["load", "-i", &rules_tar.display().to_string()]);
    d.ok(&["load", "-i", &busybox_tar.display().to_string()]);
    let all = image_names(&d, &[]);
    assert!(all.contains(&"<none>:<none>".to_string()), "{all:?}");
    assert!(all.contains(&"dangle:1".to_string()), "{all:?}");
    let none: Vec<String> = Vec::new();
    assert_eq!(image_names(&d, &["-f", "dangling=true"]), ["<none>:<none>"]);
    assert!(!image_names(&d, &["-f", "dangling=false"]).contains(&"<none>:<none>".to_string()));
    // reference: a glob on the familiar name, with or without the tag; only matching
    // names of an image are listed.
    assert_eq!(image_names(&d, &["-f", "reference=dangle"]), ["dangle:1"]);
    assert_eq!(image_names(&d, &["-f", "reference=dang*:1"]), ["dangle:1"]);
    assert_eq!(image_names(&d, &["-f", "reference=dangle:2"]), none);
    assert_eq!(
        image_names(
            &d,
            &["-f", "reference=dangle", "-f", "reference=layout:latest"]
        ),
        ["dangle:1", "layout:latest"]
    );
    // label: from the image config; every one given must be present; keys AND.
    assert_eq!(
        image_names(
            &d,
            &[
                "-f",
                "label=org.zlayer.fixture=busybox",
                "-f",
                "reference=dangle"
            ]
        ),
        ["dangle:1"]
    );
    assert_eq!(
        image_names(&d, &["-f", "label=org.zlayer.fixture=nope"]),
        none
    );
    assert_eq!(
        image_names(
            &d,
            &[
                "-f",
                "label=org.zlayer.fixture",
                "-f",
                "label=no.such.label"
            ]
        ),
        none
    );
    let (code, _, err) = run(&d, &["images", "-f", "before=x"]);
    assert_ne!(code, 0);
    assert!(err.contains("before"), "{err}");
    let (code, _, err) = run(&d, &["images", "-f", "dangling=maybe"]);
    assert_ne!(code, 0);
    assert!(err.contains("dangling=maybe"), "{err}");
}

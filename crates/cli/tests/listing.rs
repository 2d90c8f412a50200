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
    d.ok(&["run", "--name", "job", "-l", "tier=batch", &image, "true"]);
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

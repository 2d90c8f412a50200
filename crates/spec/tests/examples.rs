//! Every file in the repository's `examples/` directory must parse and validate.

use std::path::PathBuf;

use zlayer_spec::{parse_file, Action, HealthCheck, Kind};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn every_example_parses() {
    let mut count = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let d = parse_file(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
        assert!(!d.services.is_empty(), "{}", path.display());
        // JSON is the agent's storage/API form: it must round-trip and validate too.
        let json = serde_json::to_string(&d).unwrap();
        let back: zlayer_spec::Deployment = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d, "{}", path.display());
        zlayer_spec::validate(&back).unwrap();
        // Deploying the same file again is a no-op.
        assert!(zlayer_spec::plan(&d, Some(&d)).is_noop());
        count += 1;
    }
    assert!(count >= 4, "expected at least 4 examples, found {count}");
}

#[test]
fn demo_is_what_the_readme_promises() {
    let d = parse_file(&examples_dir().join("demo.yaml")).unwrap();
    assert_eq!(d.deployment, "demo");
    let web = &d.services["web"];
    assert_eq!(web.kind, Kind::Service);
    assert_eq!(web.image.name, "127.0.0.1:5000/demo/busybox:latest");
    assert_eq!(web.replicas, Some(2));
    let health = web.health.as_ref().unwrap();
    assert!(matches!(health.check, HealthCheck::Http { port: 8080, .. }));
    assert_eq!(d.services["setup"].kind, Kind::Job);
    assert_eq!(d.services["tick"].kind, Kind::Cron);
    assert_eq!(d.start_order(), vec!["setup", "tick", "web"]);
    let plan = zlayer_spec::plan(&d, None);
    assert!(plan
        .services
        .iter()
        .all(|s| matches!(s.action, Action::Create { .. })));
}

#[test]
fn relative_paths_resolve_against_the_spec_directory() {
    let d = parse_file(&examples_dir().join("web-with-db.yaml")).unwrap();
    let api = &d.services["api"];
    assert!(
        api.env_file[0].ends_with("examples/files/api.env"),
        "{}",
        api.env_file[0]
    );
    assert!(std::path::Path::new(&api.env_file[0]).is_absolute());
    assert!(std::path::Path::new(&api.env_file[0]).exists());
    assert!(std::path::Path::new(&api.secrets[0].source).exists());
    let env = std::fs::read_to_string(&api.env_file[0]).unwrap();
    zlayer_spec::parse_env_file(&env, &api.env_file[0]).unwrap();
}

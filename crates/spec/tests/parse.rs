//! Successful parses: defaults, shorthands and every field reaching the typed model.

use std::time::Duration;

use zlayer_spec::*;

fn d(services: &str) -> Deployment {
    parse_str(
        &format!("version: v1\ndeployment: demo\nservices:\n{services}"),
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn service_defaults() {
    let dep = d("  web:\n    image: busybox\n");
    let s = &dep.services["web"];
    assert_eq!(s.kind, Kind::Service);
    assert_eq!(
        s.image,
        Image {
            name: "busybox".into(),
            pull_policy: PullPolicy::IfNotPresent
        }
    );
    assert_eq!(s.replicas, Some(1));
    assert_eq!(
        s.restart,
        Some(Restart {
            policy: RestartPolicy::Always,
            backoff: Backoff::default()
        })
    );
    assert_eq!(Backoff::default().max.get(), Duration::from_secs(300));
    assert_eq!(
        s.update,
        Some(Update {
            order: UpdateOrder::StartFirst,
            health_timeout: HumanDuration::secs(60)
        })
    );
    assert_eq!(s.network, Network::Bridge);
    assert_eq!(s.health, None);
    assert_eq!(
        (s.retries, s.schedule.as_ref(), s.history),
        (None, None, None)
    );
}

#[test]
fn job_and_cron_defaults() {
    let dep = d("  j:\n    kind: job\n    image: a\n  c:\n    kind: cron\n    image: a\n    schedule: \"*/5 * * * *\"\n");
    let j = &dep.services["j"];
    assert_eq!((j.replicas, j.retries, j.timeout), (None, Some(0), None));
    assert_eq!(j.backoff, Some(Backoff::default()));
    assert_eq!(j.effective_restart().policy, RestartPolicy::Never);
    assert_eq!(j.desired_replicas(), 1);
    let c = &dep.services["c"];
    assert_eq!(c.concurrency, Some(Concurrency::Forbid));
    assert_eq!(c.history, Some(3));
    assert_eq!(c.schedule.as_ref().unwrap().as_str(), "*/5 * * * *");
}

#[test]
fn every_field() {
    let dep = every_field_deployment();
    let s = &dep.services["web"];
    image_command_env_resources_and_endpoints(s);
    health_and_restart(s);
    depends_init_storage_user_network_and_update(s);
    assert_eq!(dep.start_order(), vec!["db", "db2", "web"]);
    relative_paths_resolve_against_the_spec_directory(&dep);

    let json = serde_json::to_string(&dep).unwrap();
    assert_eq!(serde_json::from_str::<Deployment>(&json).unwrap(), dep);
}

/// A deployment setting every field of service `web` (with `db` and `db2` to depend on).
fn every_field_deployment() -> Deployment {
    d(r#"  web:
    image: {name: reg.local/web:1, pull_policy: always}
    command: {entrypoint: [httpd], args: [-f, -p, 8080], workdir: /srv}
    env: {A: literal, B: 42, C: {from_host: HOME}}
    env_file: a.env
    secrets: [{name: key, source: /etc/key}]
    resources: {cpu: 500m, memory: 1.5Gi, pids: 64}
    replicas: 0
    endpoints: [{name: http, port: 8080, publish: 18080}, {port: 53, protocol: udp}]
    health:
      check: {type: http, port: 8080, path: /healthz, status: 204}
      interval: 1s
      timeout: 500ms
      retries: 2
      start_grace: 1m30s
    restart: {policy: on-failure, backoff: {initial: 100ms, max: 10s, reset_after: 1h}}
    depends: [db, {service: db2, condition: healthy, timeout: 30s}]
    init:
      - wait_tcp: {host: db, port: 5432}
      - wait_http: {url: "http://db2:80/", timeout: 5s}
        on_failure: continue
      - run: {command: [sh, -c, "true"]}
    storage:
      - {type: named, name: data, target: /data}
      - {type: bind, source: ./conf, target: /conf, readonly: true}
      - {type: tmpfs, target: /tmp}
    user: "1000:1000"
    hostname: web.local
    network: backend
    update: {order: stop-first, health_timeout: 2m}
  db:
    image: db
  db2:
    image: db
    health: {check: {type: command, command: [pg_isready]}}
"#)
}

/// `web`: image, command, env, secrets, resources, replicas and a derived endpoint name.
fn image_command_env_resources_and_endpoints(s: &Service) {
    assert_eq!(s.image.pull_policy, PullPolicy::Always);
    assert_eq!(
        s.command.entrypoint.as_deref(),
        Some(&["httpd".to_owned()][..])
    );
    assert_eq!(s.command.args.as_ref().unwrap()[2], "8080");
    assert_eq!(s.command.workdir.as_deref(), Some("/srv"));
    assert_eq!(s.env["B"], EnvValue::Literal("42".into()));
    assert_eq!(
        s.env["C"],
        EnvValue::FromHost {
            from_host: "HOME".into()
        }
    );
    assert_eq!(s.env_file, ["a.env"]);
    assert_eq!(s.secrets[0].target, "/run/secrets/key");
    assert_eq!(s.resources.cpu, Some(Cpu { millis: 500 }));
    assert_eq!(s.resources.memory, Some(ByteSize(3 << 29)));
    assert_eq!(s.resources.pids, Some(64));
    assert_eq!(s.replicas, Some(0));
    assert_eq!(
        s.endpoints[1],
        Endpoint {
            name: "udp-53".into(),
            port: 53,
            protocol: Protocol::Udp,
            publish: None
        }
    );
}

/// `web`: the HTTP health check with its timings, and the restart policy with its backoff.
fn health_and_restart(s: &Service) {
    let h = s.health.as_ref().unwrap();
    assert_eq!(
        h.check,
        HealthCheck::Http {
            port: 8080,
            path: "/healthz".into(),
            status: Some(204)
        }
    );
    assert_eq!(
        (h.interval, h.timeout, h.retries, h.start_grace),
        (
            HumanDuration::secs(1),
            HumanDuration::millis(500),
            2,
            HumanDuration::secs(90)
        )
    );
    let r = s.restart.as_ref().unwrap();
    assert_eq!(r.policy, RestartPolicy::OnFailure);
    assert_eq!(r.backoff.reset_after, HumanDuration::secs(3600));
    assert_eq!(r.backoff.delay(1), Duration::from_millis(100));
    assert_eq!(r.backoff.delay(4), Duration::from_millis(800));
    assert_eq!(r.backoff.delay(40), Duration::from_secs(10));
}

/// `web`: dependencies (defaults filled in), init steps, mounts, user, network and update.
fn depends_init_storage_user_network_and_update(s: &Service) {
    assert_eq!(
        s.depends[0],
        Dependency {
            service: "db".into(),
            condition: Condition::Started,
            timeout: HumanDuration::secs(300)
        }
    );
    assert_eq!(s.depends[1].condition, Condition::Healthy);
    assert_eq!(
        s.init[0].action,
        InitAction::WaitTcp {
            host: "db".into(),
            port: 5432,
            timeout: HumanDuration::secs(60)
        }
    );
    assert_eq!(s.init[1].on_failure, OnFailure::Continue);
    assert_eq!(s.init[2].action.name(), "run");
    assert_eq!(
        s.storage[1],
        Mount::Bind {
            source: "./conf".into(),
            target: "/conf".into(),
            readonly: true
        }
    );
    assert_eq!(
        s.storage[2],
        Mount::Tmpfs {
            target: "/tmp".into(),
            size: None
        }
    );
    assert_eq!(s.user.as_deref(), Some("1000:1000"));
    assert_eq!(s.network, Network::Named("backend".into()));
    assert_eq!(s.update.as_ref().unwrap().order, UpdateOrder::StopFirst);
}

/// Relative paths (env files, bind sources) resolve against the spec's directory; absolute
/// ones stay.
fn relative_paths_resolve_against_the_spec_directory(dep: &Deployment) {
    let mut resolved = dep.clone();
    resolved.resolve_relative_paths(std::path::Path::new("/specs"));
    let s = &resolved.services["web"];
    assert_eq!(s.env_file, ["/specs/a.env"]);
    assert_eq!(s.secrets[0].source, "/etc/key");
    assert_eq!(
        s.storage[1],
        Mount::Bind {
            source: "/specs/./conf".into(),
            target: "/conf".into(),
            readonly: true
        }
    );
}

#[test]
fn yaml_features_anchors_merge_and_block_scalars() {
    let dep = parse_str(
        r#"version: v1
deployment: demo
x-defaults: &defaults
  image: busybox
services:
  a:
    <<: *defaults
    command:
      args:
        - sh
        - -c
        - |
          echo one
          echo two
"#,
        "t.yaml",
    );
    // `x-...` top-level keys are ignored extension fields, a home for shared anchors.
    let dep = dep.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dep.services["a"].image.name, "busybox");
    assert_eq!(
        dep.services["a"].command.args.as_ref().unwrap()[2],
        "echo one\necho two\n"
    );

    let dep = parse_str(
        "version: v1\ndeployment: demo\nservices:\n  a: &a\n    image: busybox\n    command:\n      args:\n        - sh\n        - -c\n        - |\n          echo one\n          echo two\n  b:\n    <<: *a\n    replicas: 3\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dep.services["a"].command.args.as_ref().unwrap()[2],
        "echo one\necho two\n"
    );
    assert_eq!(dep.services["b"].image.name, "busybox");
    assert_eq!(dep.services["b"].replicas, Some(3));
}

#[test]
fn secret_bytes_never_print() {
    let s = SecretBytes::new(b"hunter2".to_vec());
    assert_eq!(format!("{s:?}"), "SecretBytes(<7 bytes redacted>)");
    assert_eq!(format!("{s}"), "<redacted>");
    assert_eq!(s.expose(), b"hunter2");
}

#[test]
fn parse_file_reports_unreadable_files() {
    let err = parse_file(std::path::Path::new("/nonexistent/spec.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/spec.yaml: cannot read spec file:"),
        "{err}"
    );
}

#[test]
fn source_map_points_at_values() {
    let (_, map) = parse_str_with_map(
        "version: v1\ndeployment: demo\nservices:\n  web:\n    image: busybox\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        map.get("services.web.image"),
        Some(Location { line: 5, col: 12 })
    );
    assert_eq!(
        map.locate("services.web.replicas"),
        Some(Location { line: 5, col: 5 })
    );
}

#[test]
fn docs_extension_key_example() {
    // The `x-` example of docs/spec.md, with merge keys inside flow mappings.
    let dep = parse_str(
        "version: v1\ndeployment: demo\nx-defaults: &defaults\n  image: zlayer.local/demo/busybox:latest\n  restart: {policy: on-failure}\nservices:\n  a: {<<: *defaults, replicas: 2}\n  b: {<<: *defaults}\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dep.services["a"].replicas, Some(2));
    assert_eq!(
        dep.services["b"].restart.as_ref().unwrap().policy,
        RestartPolicy::OnFailure
    );
}

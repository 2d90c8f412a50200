//! Error reporting: exact `file:line:col: message` for syntax, type, unknown-field and
//! validation errors, all collected in one run.

use zlayer_spec::parse_str;

/// All error lines for `src` parsed as `t.yaml`.
fn errs(src: &str) -> Vec<String> {
    match parse_str(src, "t.yaml") {
        Ok(d) => panic!("expected errors, parsed: {d:#?}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

const HEAD: &str = "version: v1\ndeployment: demo\nservices:\n";

/// `HEAD` + `body`; the body's first line is line 4.
fn spec(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn unknown_field_with_suggestion() {
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    replica: 2\n")),
        ["t.yaml:6:5: unknown field `replica` in service \"web\", did you mean `replicas`?"]
    );
}

#[test]
fn unknown_field_without_suggestion_lists_known_fields() {
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    health:\n      check: {type: tcp, port: 80, path: /}\n")),
        ["t.yaml:7:36: unknown field `path` in service \"web\" (health.check); known fields: type, port"]
    );
}

#[test]
fn unknown_top_level_field() {
    assert_eq!(
        errs("version: v1\ndeployment: demo\nservices:\n  web: {image: x}\nreplicas: 3\n"),
        ["t.yaml:5:1: unknown field `replicas` in the deployment; known fields: version, deployment, services"]
    );
}

#[test]
fn several_errors_in_one_run_sorted_by_position() {
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    replicas: -1\n    endpoints:\n      - {name: http, port: 70000, protocl: tcp}\n")),
        [
            "t.yaml:6:15: `replicas` in service \"web\": expected a whole number >= 0, found `-1`",
            "t.yaml:8:28: `port` in service \"web\" (endpoints[0]): 70000 is out of range, expected a whole number 1..65535",
            "t.yaml:8:35: unknown field `protocl` in service \"web\" (endpoints[0]), did you mean `protocol`?",
        ]
    );
}

#[test]
fn top_level_problems_all_reported() {
    assert_eq!(
        errs("version: v2\ndeployment: Demo\nservice: {}\n"),
        [
            "t.yaml:1:1: missing field `services` in the deployment",
            "t.yaml:1:10: unsupported spec version `v2`: this agent understands `v1`",
            "t.yaml:2:13: deployment name `Demo` has uppercase letters (try `demo`)",
            "t.yaml:3:1: unknown field `service` in the deployment, did you mean `services`?",
        ]
    );
}

#[test]
fn bad_enum_value_suggests() {
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    health:\n      check: {type: htp, port: 80}\n")),
        ["t.yaml:7:21: `type` in service \"web\" (health.check): invalid value `htp`, did you mean `http`?"]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    restart: {policy: sometimes}\n")),
        ["t.yaml:6:23: `policy` in service \"web\" (restart): invalid value `sometimes`, expected one of: never, on-failure, always"]
    );
    assert_eq!(
        errs(&spec("  web:\n    kind: jb\n    image: x\n")),
        ["t.yaml:5:11: `kind` in service \"web\": invalid value `jb`, did you mean `job`?"]
    );
}

#[test]
fn value_type_errors() {
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    resources: {memory: 64m, cpu: lots, pids: 0}\n")),
        [
            "t.yaml:6:25: `memory` in service \"web\" (resources): ambiguous size suffix in `64m`: write `64Mi` for binary (x1024) or `64M` for decimal (x1000) units",
            "t.yaml:6:35: `cpu` in service \"web\" (resources): invalid CPU amount `lots`: expected CPUs like `0.5` or `2`, or millicores like `500m`",
            "t.yaml:6:47: `pids` in service \"web\" (resources): 0 is out of range, expected a whole number >= 2",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    health:\n      check: {type: tcp, port: 80}\n      interval: 10\n      timeout: 5x\n")),
        [
            "t.yaml:8:17: `interval` in service \"web\" (health): duration `10` needs a unit (ns, us, ms, s, m, h, d), e.g. `10s`",
            "t.yaml:9:16: `timeout` in service \"web\" (health): invalid duration unit `x` in `5x`: use ns, us, ms, s, m, h or d",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: {name: x, pull_policy: sometimes}\n    replicas: \"2\"\n    command: \"httpd -f\"\n")),
        [
            "t.yaml:5:35: `pull_policy` in service \"web\" (image): invalid value `sometimes`, expected one of: always, if_not_present, never",
            "t.yaml:6:15: `replicas` in service \"web\": expected a whole number >= 0, found `2`",
            "t.yaml:7:14: `command` in service \"web\": expected a mapping {entrypoint, args, workdir} or a list of arguments (not a shell string), found `httpd -f`",
        ]
    );
}

#[test]
fn missing_required_fields() {
    assert_eq!(
        errs(&spec("  web:\n    replicas: 1\n")),
        ["t.yaml:5:5: missing field `image` in service \"web\""]
    );
    assert_eq!(
        errs(&spec(
            "  web:\n    image: x\n    endpoints: [{name: http}]\n"
        )),
        ["t.yaml:6:17: missing field `port` in service \"web\" (endpoints[0])"]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    health: {check: {port: 80}}\n")),
        ["t.yaml:6:21: missing field `type` in service \"web\" (health.check) (one of: tcp, http, command)"]
    );
}

#[test]
fn syntax_error_has_position() {
    assert_eq!(
        errs("version: v1\ndeployment: demo\nservices:\n  web:\n    image: [x\n"),
        ["t.yaml:6:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']'"]
    );
    let e = errs("version: v1\n  deployment: demo\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.yaml:2:"), "{e:?}");
    assert_eq!(
        errs("version: v1\nversion: v1\n"),
        ["t.yaml:2:1: duplicate key `version` (first defined at line 1)"]
    );
}

#[test]
fn empty_and_non_mapping_files() {
    assert_eq!(
        errs(""),
        ["t.yaml:1:1: the file is empty; expected `version: v1`, `deployment:` and `services:`"]
    );
    assert_eq!(
        errs("- a\n- b\n"),
        ["t.yaml:1:1: the spec file: expected a mapping with `version`, `deployment` and `services`, found a list"]
    );
    assert_eq!(
        errs("version: v1\ndeployment: demo\nservices: {}\n"),
        ["t.yaml:3:11: `services` is empty; declare at least one service"]
    );
}

#[test]
fn dependency_cycle_reports_the_path() {
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    depends: [db]\n  db:\n    image: x\n    depends: [{service: cache}]\n  cache:\n    image: x\n    depends: [web]\n")),
        ["t.yaml:12:15: dependency cycle: cache -> web -> db -> cache"]
    );
    assert_eq!(
        errs(&spec(
            "  a:\n    image: x\n    depends: [b]\n  b:\n    image: x\n    depends: [a]\n"
        )),
        ["t.yaml:6:15: dependency cycle: a -> b -> a"]
    );
    assert_eq!(
        errs(&spec("  a:\n    image: x\n    depends: [a]\n")),
        ["t.yaml:6:15: service \"a\" depends on itself"]
    );
}

#[test]
fn two_separate_cycles_both_reported() {
    let e = errs(&spec(
        "  a:\n    image: x\n    depends: [b]\n  b:\n    image: x\n    depends: [a]\n  c:\n    image: x\n    depends: [d]\n  d:\n    image: x\n    depends: [c]\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:6:15: dependency cycle: a -> b -> a",
            "t.yaml:12:15: dependency cycle: c -> d -> c"
        ]
    );
}

#[test]
fn dependency_references() {
    assert_eq!(
        errs(&spec(
            "  web:\n    image: busybox\n    depends: [{service: dbb}]\n  db:\n    image: x\n"
        )),
        ["t.yaml:6:25: service \"web\" depends on unknown service `dbb`, did you mean `db`?"]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    depends: [{service: db, condition: completed}]\n  db:\n    image: x\n")),
        ["t.yaml:6:40: condition `completed` needs a job, but `db` is kind: service"]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: busybox\n    depends: [{service: db, condition: healthy}]\n  db:\n    image: x\n")),
        ["t.yaml:6:40: condition `healthy` needs a health check, but service `db` has none"]
    );
    assert_eq!(
        errs(&spec(
            "  web:\n    image: busybox\n    depends: [db, {service: db}]\n  db:\n    image: x\n"
        )),
        ["t.yaml:6:29: service \"web\" lists `db` twice in depends (first at depends[0])"]
    );
}

#[test]
fn dependency_on_a_service_with_a_type_error_is_not_unknown() {
    // `db` fails to decode; `web` must not also be told that `db` does not exist.
    assert_eq!(
        errs(&spec(
            "  web:\n    image: x\n    depends: [db]\n  db:\n    image: x\n    replicas: many\n"
        )),
        ["t.yaml:9:15: `replicas` in service \"db\": expected a whole number >= 0, found `many`"]
    );
}

#[test]
fn duplicate_published_ports() {
    assert_eq!(
        errs(&spec("  a:\n    image: x\n    endpoints: [{port: 80, publish: 8080}]\n  b:\n    image: x\n    endpoints: [{port: 81, publish: 8080}]\n")),
        ["t.yaml:9:37: host port 8080/tcp is already published by service \"a\" (endpoints[0]), line 6"]
    );
    // Same number, different protocol: fine.
    parse_str(
        &spec("  a:\n    image: x\n    endpoints: [{port: 53, publish: 5353}, {port: 53, protocol: udp, publish: 5353}]\n"),
        "t.yaml",
    )
    .unwrap();
}

#[test]
fn endpoint_rules() {
    assert_eq!(
        errs(&spec("  a:\n    image: x\n    network: host\n    endpoints: [{name: Web, port: 80, publish: 80}, {name: Web, port: 80}]\n")),
        [
            "t.yaml:7:24: endpoint name `Web` has uppercase letters (try `web`)",
            "t.yaml:7:48: `publish` in service \"a\" cannot work with `network: host`",
            "t.yaml:7:60: endpoint name `Web` has uppercase letters (try `web`)",
            "t.yaml:7:60: duplicate endpoint name `Web` in service \"a\" (first at endpoints[0])",
            "t.yaml:7:71: port 80/tcp is declared twice in service \"a\" (first at endpoints[0])",
        ]
    );
}

#[test]
fn only_services_publish_ports() {
    assert_eq!(
        errs(&spec(
            "  j:\n    kind: job\n    image: x\n    endpoints: [{port: 80, publish: 8080}]\n"
        )),
        ["t.yaml:7:37: `publish` in job \"j\": only services (kind: service) publish ports"]
    );
}

#[test]
fn kind_specific_fields() {
    assert_eq!(
        errs(&spec("  c:\n    kind: cron\n    image: x\n")),
        ["t.yaml:5:5: service \"c\" is kind: cron but has no `schedule` (e.g. schedule: \"0 3 * * *\" or \"@hourly\")"]
    );
    assert_eq!(
        errs(&spec("  c:\n    image: x\n    schedule: \"@daily\"\n")),
        ["t.yaml:6:5: `schedule` in service \"c\" only applies to kind: cron, but this is kind: service"]
    );
    assert_eq!(
        errs(&spec("  j:\n    kind: job\n    image: x\n    replicas: 2\n    restart: {policy: always}\n    history: 3\n")),
        [
            "t.yaml:7:5: `replicas` in service \"j\" only applies to kind: service, but this is kind: job",
            "t.yaml:8:5: `restart` in service \"j\" only applies to kind: service (jobs and cron entries use `retries` and `backoff`), but this is kind: job",
            "t.yaml:9:5: `history` in service \"j\" only applies to kind: cron, but this is kind: job",
        ]
    );
    assert_eq!(
        errs(&spec("  s:\n    image: x\n    retries: 3\n")),
        ["t.yaml:6:5: `retries` in service \"s\" only applies to kind: job or cron (services use `restart`), but this is kind: service"]
    );
}

#[test]
fn cron_schedule_errors() {
    assert_eq!(
        errs(&spec(
            "  c:\n    kind: cron\n    image: x\n    schedule: \"61 * * * *\"\n"
        )),
        ["t.yaml:7:15: `schedule` in service \"c\": minute 61 is out of range 0-59"]
    );
    assert_eq!(
        errs(&spec(
            "  c:\n    kind: cron\n    image: x\n    schedule: \"0 0 31 2 *\"\n"
        )),
        ["t.yaml:7:15: schedule `0 0 31 2 *` never fires (no such date)"]
    );
    assert_eq!(
        errs(&spec("  c:\n    kind: cron\n    image: x\n    schedule: \"@daily\"\n    concurrency: forbidd\n")),
        ["t.yaml:8:18: `concurrency` in service \"c\": invalid value `forbidd`, did you mean `forbid`?"]
    );
}

#[test]
fn names_must_be_dns_labels() {
    assert_eq!(
        errs(&spec("  Web_1:\n    image: x\n  1st:\n    image: x\n  -x:\n    image: x\n")),
        [
            "t.yaml:4:3: service name `Web_1` has uppercase letters (try `web_1`) (it becomes a DNS name)",
            "t.yaml:6:3: service name `1st` must start with a letter (it becomes a DNS name)",
            "t.yaml:8:3: service name `-x` must be lowercase letters, digits and `-`, starting and ending with a letter or digit (it becomes a DNS name)",
        ]
    );
}

#[test]
fn init_steps() {
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    init:\n      - {wait_tcp: {host: db, port: 5}, run: {command: [x]}}\n      - {on_failure: continue}\n")),
        [
            "t.yaml:7:9: service \"web\" (init[0]) has `wait_tcp` and `run`; write one action per step",
            "t.yaml:8:9: service \"web\" (init[1]) needs one of `wait_tcp`, `wait_http` or `run`",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    init:\n      - wait_http: {url: https://x}\n        on_failure: ignore\n")),
        [
            "t.yaml:8:21: `on_failure` in service \"web\" (init[0]): invalid value `ignore`, expected one of: fail, continue",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    init:\n      - wait_http: {url: https://x}\n      - run: {command: [], timout: 5s}\n")),
        [
            // An unknown field does not stop decoding: the other problems are reported too.
            "t.yaml:7:26: `url` must start with http:// (https is not supported for waits), found `https://x`",
            "t.yaml:8:24: init `run` command must not be empty",
            "t.yaml:8:28: unknown field `timout` in service \"web\" (init[1].run), did you mean `timeout`?",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    init:\n      - wait_http: {url: https://x}\n      - run: {command: []}\n")),
        [
            "t.yaml:7:26: `url` must start with http:// (https is not supported for waits), found `https://x`",
            "t.yaml:8:24: init `run` command must not be empty",
        ]
    );
}

#[test]
fn storage_and_secrets() {
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    storage:\n      - {type: bind, target: /x}\n      - {type: named, name: v, target: /x, readnly: true}\n")),
        [
            "t.yaml:7:9: missing field `source` in service \"web\" (storage[0])",
            "t.yaml:8:44: unknown field `readnly` in service \"web\" (storage[1]), did you mean `readonly`?",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    storage:\n      - {type: tmpfs, target: rel, size: 1g}\n")),
        [
            "t.yaml:7:31: storage `target` in service \"web\" (storage[0]) must be an absolute path, found `rel`",
            "t.yaml:7:42: `size` in service \"web\" (storage[0]): ambiguous size suffix in `1g`: write `1Gi` for binary (x1024) or `1G` for decimal (x1000) units",
        ]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    storage:\n      - {type: tmpfs, target: rel}\n      - {type: volume, target: /v}\n")),
        ["t.yaml:8:16: `type` in service \"web\" (storage[1]): invalid value `volume`, expected one of: named, bind, tmpfs"]
    );
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    storage:\n      - {type: tmpfs, target: rel}\n      - {type: named, name: data, target: /run/secrets/s}\n    secrets: [{name: s, source: f}, {name: s, source: g, target: /run/secrets/s}]\n")),
        [
            "t.yaml:7:31: storage `target` in service \"web\" (storage[0]) must be an absolute path, found `rel`",
            "t.yaml:8:43: `/run/secrets/s` in service \"web\" is mounted twice (also by secrets[0])",
            "t.yaml:9:44: duplicate secret `s` in service \"web\" (first: secrets[0], line 9)",
            "t.yaml:9:66: `/run/secrets/s` in service \"web\" is mounted twice (also by secrets[0])",
        ]
    );
}

#[test]
fn env_rules() {
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    env: {1BAD: x, OK: {from_host: PATH}, NULL: , H: {from_hots: X}}\n")),
        [
            "t.yaml:6:11: environment variable name `1BAD` in service \"web\" must be letters, digits and `_`, not starting with a digit",
            "t.yaml:6:47: `NULL` in service \"web\" (env): expected a string, or {from_host: VAR} to copy a host variable, found null",
            "t.yaml:6:54: missing field `from_host` in service \"web\" (env.H)",
            "t.yaml:6:55: unknown field `from_hots` in service \"web\" (env.H), did you mean `from_host`?",
        ]
    );
}

#[test]
fn misc_service_rules() {
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    user: \"a b\"\n    hostname: Bad_Host\n    network: mynet\n    command: {workdir: tmp}\n    restart: {backoff: {initial: 10s, max: 1s}}\n")),
        [
            "t.yaml:6:11: `user` `a b` must be USER, UID, USER:GROUP or UID:GID",
            "t.yaml:7:15: hostname `Bad_Host` must be DNS labels separated by dots, at most 64 characters",
            "t.yaml:9:24: `workdir` in service \"web\" (command) must be an absolute path, found `tmp`",
            "t.yaml:10:44: backoff `max` (1s) is smaller than `initial` (10s)",
        ]
    );
}

#[test]
fn json_specs_validate_with_paths() {
    let json = r#"{"version":"v1","deployment":"demo","services":{
        "web":{"image":{"name":"x"},"replicas":1,"depends":[{"service":"nope","condition":"started","timeout":"1s"}]}}}"#;
    let d: zlayer_spec::Deployment = serde_json::from_str(json).unwrap();
    let e = zlayer_spec::validate(&d).unwrap_err();
    assert_eq!(
        e.to_string(),
        "services.web.depends[0].service: service \"web\" depends on unknown service `nope`"
    );
}

#[test]
fn json_specs_check_kind_specific_fields() {
    let json = r#"{"version":"v1","deployment":"demo","services":{
        "j":{"kind":"job","image":{"name":"x"},"replicas":2,"schedule":"@daily"}}}"#;
    let d: zlayer_spec::Deployment = serde_json::from_str(json).unwrap();
    let e = zlayer_spec::validate(&d).unwrap_err();
    assert_eq!(
        e.to_string(),
        "services.j.replicas: `replicas` in service \"j\" does not apply to kind: job\n\
         services.j.schedule: `schedule` in service \"j\" does not apply to kind: job"
    );
}

#[test]
fn decode_and_validation_errors_in_one_run() {
    // A type error in `replicas` does not hide the relative workdir in the same service, and a
    // dependent's `healthy` condition is not second-guessed on the broken service.
    assert_eq!(
        errs(&spec("  web:\n    image: x\n    replicas: many\n    command: {workdir: tmp}\n    health: {check: {type: tcp, port: 0}}\n  api:\n    image: x\n    depends: [{service: web, condition: healthy}]\n")),
        [
            "t.yaml:6:15: `replicas` in service \"web\": expected a whole number >= 0, found `many`",
            "t.yaml:7:24: `workdir` in service \"web\" (command) must be an absolute path, found `tmp`",
            "t.yaml:8:39: `port` in service \"web\" (health.check): 0 is out of range, expected a whole number 1..65535",
        ]
    );
}

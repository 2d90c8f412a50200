//! Semantic checks on a decoded [`Deployment`]: names, ports, references between services,
//! dependency cycles, kind-specific rules. Every problem is reported, each at the position the
//! [`SourceMap`] knows for it (or with its path only, for specs that did not come from YAML).

use std::collections::{BTreeSet, HashMap};

use crate::decode::{join, SourceMap};
use crate::error::{describe, Sink};
use crate::model::*;
use crate::suggest::hint;

struct Checker<'a> {
    sink: &'a mut Sink,
    map: Option<&'a SourceMap>,
    /// Services that failed to decode in part; others do not look into them.
    incomplete: &'a BTreeSet<String>,
}

impl Checker<'_> {
    fn err(&mut self, path: &str, msg: String) {
        let loc = self.map.and_then(|m| m.locate(path));
        self.sink.push(loc, path, msg);
    }

    /// `", line N"` when the position of `path` is known.
    fn line_of(&self, path: &str) -> String {
        self.map
            .and_then(|m| m.locate(path))
            .map(|l| format!(", line {}", l.line))
            .unwrap_or_default()
    }

    fn absolute(&mut self, path: &str, what: &str, value: &str) {
        if !value.starts_with('/') {
            self.err(
                path,
                format!(
                    "{what} in {} must be an absolute path, found `{value}`",
                    describe(parent(path))
                ),
            );
        }
    }
}

/// Records `what` as the user of `key` unless it already has one; returns the earlier user.
fn first_use<'k>(
    seen: &mut HashMap<&'k str, String>,
    key: &'k str,
    what: String,
) -> Option<String> {
    match seen.get(key) {
        Some(first) => Some(first.clone()),
        None => {
            seen.insert(key, what);
            None
        }
    }
}

fn parent(path: &str) -> &str {
    path.rfind(['.', '[']).map_or("", |i| &path[..i])
}

/// RFC 1123 label: 1-63 of `a-z0-9-`, starting and ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn label_problem(s: &str) -> String {
    if s.len() > 63 {
        "is longer than 63 characters".to_owned()
    } else if s.bytes().any(|b| b.is_ascii_uppercase()) {
        format!("has uppercase letters (try `{}`)", s.to_ascii_lowercase())
    } else {
        "must be lowercase letters, digits and `-`, starting and ending with a letter or digit"
            .to_owned()
    }
}

/// A portable variable name (letters, digits and `_`, not starting with a digit): the rule for
/// `env` keys, `from_host` names and the names in a service's `env_file`.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Checks `d`; `declared` are the service names written in the file (some may have failed to
/// decode and be missing from `d`).
pub(crate) fn check(
    d: &Deployment,
    map: Option<&SourceMap>,
    declared: &BTreeSet<String>,
    incomplete: &BTreeSet<String>,
    sink: &mut Sink,
) {
    let mut c = Checker {
        sink,
        map,
        incomplete,
    };
    if !d.deployment.is_empty() && !is_dns_label(&d.deployment) {
        let problem = label_problem(&d.deployment);
        c.err(
            "deployment",
            format!("deployment name `{}` {problem}", d.deployment),
        );
    }
    for name in declared {
        if !is_dns_label(name) || !name.starts_with(|ch: char| ch.is_ascii_lowercase()) {
            let problem = if is_dns_label(name) {
                "must start with a letter".to_owned()
            } else {
                label_problem(name)
            };
            let path = format!("services.{name}#key");
            c.err(
                &path,
                format!("service name `{name}` {problem} (it becomes a DNS name)"),
            );
        }
    }
    for (name, svc) in &d.services {
        service(&mut c, d, declared, name, svc);
    }
    published_ports(&mut c, d);
    cycles(&mut c, d);
}

fn service(
    c: &mut Checker<'_>,
    d: &Deployment,
    declared: &BTreeSet<String>,
    name: &str,
    s: &Service,
) {
    let p = join("services", name);
    command_and_env(c, &p, name, s);
    mounts(c, &p, name, s);
    resources(c, &p, name, s);
    endpoints(c, &p, name, s);
    timing(c, &p, s);
    depends(c, d, declared, &p, name, s);
    init_and_identity(c, &p, s);
}

/// The image name, the command and the environment.
fn command_and_env(c: &mut Checker<'_>, p: &str, name: &str, s: &Service) {
    if s.image.name.chars().any(char::is_whitespace) {
        c.err(
            &join(p, "image"),
            format!(
                "image `{}` in service \"{name}\" contains whitespace",
                s.image.name
            ),
        );
    }
    if let Some(w) = &s.command.workdir {
        c.absolute(&format!("{p}.command.workdir"), "`workdir`", w);
    }
    if s.command.entrypoint.as_ref().is_some_and(Vec::is_empty) {
        c.err(
            &format!("{p}.command.entrypoint"),
            format!("`entrypoint` in service \"{name}\" is an empty list; leave it out to use the image's"),
        );
    }
    for (key, value) in &s.env {
        let ep = format!("{p}.env.{key}");
        if !is_env_name(key) {
            c.err(&format!("{ep}#key"), format!("environment variable name `{key}` in service \"{name}\" must be letters, digits and `_`, not starting with a digit"));
        }
        if let EnvValue::FromHost { from_host } = value {
            if !is_env_name(from_host) {
                c.err(&format!("{ep}.from_host"), format!("host variable name `{from_host}` in service \"{name}\" is not a valid variable name"));
            }
        }
    }
}

/// Secrets and storage: valid names, absolute targets, no target mounted twice.
fn mounts(c: &mut Checker<'_>, p: &str, name: &str, s: &Service) {
    let mut secret_names: HashMap<&str, usize> = HashMap::new();
    let mut targets: HashMap<&str, String> = HashMap::new();
    for (i, sec) in s.secrets.iter().enumerate() {
        let sp = format!("{p}.secrets[{i}]");
        if !is_dns_label(&sec.name) {
            c.err(
                &format!("{sp}.name"),
                format!("secret name `{}` {}", sec.name, label_problem(&sec.name)),
            );
        }
        if let Some(first) = secret_names.insert(&sec.name, i) {
            let line = c.line_of(&format!("{p}.secrets[{first}]"));
            c.err(
                &format!("{sp}.name"),
                format!(
                    "duplicate secret `{}` in service \"{name}\" (first: secrets[{first}]{line})",
                    sec.name
                ),
            );
        }
        c.absolute(&format!("{sp}.target"), "secret `target`", &sec.target);
        if let Some(first) = first_use(&mut targets, &sec.target, format!("secrets[{i}]")) {
            c.err(
                &format!("{sp}.target"),
                format!(
                    "`{}` in service \"{name}\" is mounted twice (also by {first})",
                    sec.target
                ),
            );
        }
    }
    for (i, m) in s.storage.iter().enumerate() {
        let mp = format!("{p}.storage[{i}]");
        c.absolute(&format!("{mp}.target"), "storage `target`", m.target());
        if let Some(first) = first_use(&mut targets, m.target(), format!("storage[{i}]")) {
            c.err(
                &format!("{mp}.target"),
                format!(
                    "`{}` in service \"{name}\" is mounted twice (also by {first})",
                    m.target()
                ),
            );
        }
        if let Mount::Named { name: vol, .. } = m {
            let ok = !vol.is_empty()
                && vol.len() <= 128
                && vol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && vol.as_bytes()[0].is_ascii_alphanumeric();
            if !ok {
                c.err(&format!("{mp}.name"), format!("volume name `{vol}` must be letters, digits, `-`, `_` or `.`, starting with a letter or digit"));
            }
        }
        if let Mount::Tmpfs { size: Some(sz), .. } = m {
            if sz.0 == 0 {
                c.err(
                    &format!("{mp}.size"),
                    "tmpfs `size` must be greater than 0 (leave it out for the default)".to_owned(),
                );
            }
        }
    }
}

/// CPU and memory limits within what the kernel and the runtime accept.
fn resources(c: &mut Checker<'_>, p: &str, name: &str, s: &Service) {
    if let Some(cpu) = s.resources.cpu {
        if cpu.millis == 0 {
            c.err(&format!("{p}.resources.cpu"), format!("`cpu` in service \"{name}\" must be greater than 0 (leave it out for no limit)"));
        } else if cpu.millis < 10 {
            // Below 10m the CFS quota would be under the kernel's 1 ms minimum (docker: 0.01).
            c.err(
                &format!("{p}.resources.cpu"),
                format!(
                    "`cpu` in service \"{name}\" is {}m; the minimum is 10m (0.01 CPU)",
                    cpu.millis
                ),
            );
        }
    }
    if let Some(mem) = s.resources.memory {
        // The runtime's minimum (docker's): below it a container cannot start.
        if mem.0 < 6 << 20 {
            c.err(
                &format!("{p}.resources.memory"),
                format!(
                    "`memory` in service \"{name}\" is {} bytes; the minimum is 6Mi",
                    mem.0
                ),
            );
        }
    }
}

/// Endpoint names and ports unique in the service; `publish` only where it can work.
fn endpoints(c: &mut Checker<'_>, p: &str, name: &str, s: &Service) {
    let mut ep_names: HashMap<&str, usize> = HashMap::new();
    let mut ep_ports: HashMap<(u16, Protocol), usize> = HashMap::new();
    for (i, e) in s.endpoints.iter().enumerate() {
        let ep = format!("{p}.endpoints[{i}]");
        if !is_dns_label(&e.name) {
            c.err(
                &format!("{ep}.name"),
                format!("endpoint name `{}` {}", e.name, label_problem(&e.name)),
            );
        }
        if let Some(first) = ep_names.insert(&e.name, i) {
            c.err(&format!("{ep}.name"), format!("duplicate endpoint name `{}` in service \"{name}\" (first at endpoints[{first}])", e.name));
        }
        if let Some(first) = ep_ports.insert((e.port, e.protocol), i) {
            c.err(&format!("{ep}.port"), format!("port {}/{} is declared twice in service \"{name}\" (first at endpoints[{first}])", e.port, e.protocol));
        }
        if e.publish.is_some() && s.kind != Kind::Service {
            c.err(
                &format!("{ep}.publish"),
                format!(
                    "`publish` in {} \"{name}\": only services (kind: service) publish ports",
                    s.kind
                ),
            );
        }
        if e.publish.is_some() && matches!(s.network, Network::Host | Network::None) {
            c.err(
                &format!("{ep}.publish"),
                format!(
                    "`publish` in service \"{name}\" cannot work with `network: {}`",
                    s.network.as_str()
                ),
            );
        }
    }
}

/// Health checks, backoffs, timeouts and schedules that can take effect.
fn timing(c: &mut Checker<'_>, p: &str, s: &Service) {
    if let Some(h) = &s.health {
        let hp = format!("{p}.health");
        match &h.check {
            HealthCheck::Http { path, .. } if !path.starts_with('/') => {
                c.err(
                    &format!("{hp}.check.path"),
                    format!("http health check path `{path}` must start with `/`"),
                );
            }
            HealthCheck::Command { command } if command.is_empty() => {
                c.err(
                    &format!("{hp}.check.command"),
                    "health check `command` must not be empty".to_owned(),
                );
            }
            _ => {}
        }
        if h.interval.0.is_zero() {
            c.err(
                &format!("{hp}.interval"),
                "health `interval` must be greater than 0".to_owned(),
            );
        }
        if h.timeout.0.is_zero() {
            c.err(
                &format!("{hp}.timeout"),
                "health `timeout` must be greater than 0".to_owned(),
            );
        }
    }
    for (bp, b) in [
        (
            format!("{p}.restart.backoff"),
            s.restart.as_ref().map(|r| &r.backoff),
        ),
        (format!("{p}.backoff"), s.backoff.as_ref()),
    ] {
        if let Some(b) = b {
            if b.initial.0.is_zero() {
                c.err(
                    &format!("{bp}.initial"),
                    "backoff `initial` must be greater than 0".to_owned(),
                );
            }
            if b.initial > b.max {
                c.err(
                    &format!("{bp}.max"),
                    format!(
                        "backoff `max` ({}) is smaller than `initial` ({})",
                        b.max, b.initial
                    ),
                );
            }
        }
    }
    if s.timeout.is_some_and(|t| t.0.is_zero()) {
        c.err(
            &format!("{p}.timeout"),
            "`timeout` must be greater than 0 (leave it out for no limit)".to_owned(),
        );
    }
    if let Some(u) = &s.update {
        if u.health_timeout.0.is_zero() {
            c.err(
                &format!("{p}.update.health_timeout"),
                "`health_timeout` must be greater than 0".to_owned(),
            );
        }
    }
    if let Some(sched) = &s.schedule {
        if !sched.can_fire() {
            c.err(
                &format!("{p}.schedule"),
                format!("schedule `{sched}` never fires (no such date)"),
            );
        }
    }
}

/// Each dependency names another declared service with a condition it can meet.
fn depends(
    c: &mut Checker<'_>,
    d: &Deployment,
    declared: &BTreeSet<String>,
    p: &str,
    name: &str,
    s: &Service,
) {
    let mut seen_deps: HashMap<&str, usize> = HashMap::new();
    for (i, dep) in s.depends.iter().enumerate() {
        let dp = format!("{p}.depends[{i}]");
        let sp = format!("{dp}.service");
        if dep.service == name {
            c.err(&sp, format!("service \"{name}\" depends on itself"));
            continue;
        }
        if let Some(first) = seen_deps.insert(&dep.service, i) {
            c.err(
                &sp,
                format!(
                    "service \"{name}\" lists `{}` twice in depends (first at depends[{first}])",
                    dep.service
                ),
            );
        }
        if !declared.contains(&dep.service) {
            let suggestion = hint(&dep.service, declared.iter().map(String::as_str));
            c.err(
                &sp,
                format!(
                    "service \"{name}\" depends on unknown service `{}`{suggestion}",
                    dep.service
                ),
            );
            continue;
        }
        let Some(target) = d
            .services
            .get(&dep.service)
            .filter(|_| !c.incomplete.contains(&dep.service))
        else {
            continue;
        };
        let cp = format!("{dp}.condition");
        match dep.condition {
            Condition::Completed if target.kind != Kind::Job => {
                c.err(
                    &cp,
                    format!(
                        "condition `completed` needs a job, but `{}` is kind: {}",
                        dep.service, target.kind
                    ),
                );
            }
            Condition::Healthy if target.health.is_none() => {
                c.err(
                    &cp,
                    format!(
                        "condition `healthy` needs a health check, but service `{}` has none",
                        dep.service
                    ),
                );
            }
            _ if target.kind == Kind::Cron => {
                c.err(
                    &sp,
                    format!(
                        "service \"{name}\" cannot depend on cron entry `{}`",
                        dep.service
                    ),
                );
            }
            _ => {}
        }
    }
}

/// Init steps, user, hostname and network.
fn init_and_identity(c: &mut Checker<'_>, p: &str, s: &Service) {
    for (i, step) in s.init.iter().enumerate() {
        let ip = format!("{p}.init[{i}]");
        match &step.action {
            InitAction::WaitHttp { url, .. } if !url.starts_with("http://") => {
                c.err(&format!("{ip}.wait_http.url"), format!("`url` must start with http:// (https is not supported for waits), found `{url}`"));
            }
            InitAction::Run { command, .. } if command.is_empty() => {
                c.err(
                    &format!("{ip}.run.command"),
                    "init `run` command must not be empty".to_owned(),
                );
            }
            _ => {}
        }
    }
    if let Some(user) = &s.user {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        let ok = match user.split_once(':') {
            Some((u, g)) => valid(u) && valid(g),
            None => valid(user),
        };
        if !ok {
            c.err(
                &format!("{p}.user"),
                format!("`user` `{user}` must be USER, UID, USER:GROUP or UID:GID"),
            );
        }
    }
    if let Some(h) = &s.hostname {
        if h.len() > 64 || !h.split('.').all(is_dns_label) {
            c.err(
                &format!("{p}.hostname"),
                format!(
                    "hostname `{h}` must be DNS labels separated by dots, at most 64 characters"
                ),
            );
        }
    }
    if let Network::Named(n) = &s.network {
        if !is_dns_label(n) {
            let suggestion = hint(n, ["none", "host", "bridge"]);
            c.err(
                &format!("{p}.network"),
                format!(
                    "network `{n}` is not none, host, bridge or a valid network name{suggestion}"
                ),
            );
        }
    }
}

/// Host ports must be unique per protocol across the whole deployment.
fn published_ports(c: &mut Checker<'_>, d: &Deployment) {
    let mut seen: HashMap<(u16, Protocol), String> = HashMap::new();
    for (name, s) in &d.services {
        for (i, e) in s.endpoints.iter().enumerate() {
            let Some(port) = e.publish else { continue };
            let path = format!("services.{name}.endpoints[{i}].publish");
            if let Some(first) = seen.get(&(port, e.protocol)) {
                let line = c.line_of(first);
                let first_desc = describe(parent(first));
                c.err(
                    &path,
                    format!(
                        "host port {port}/{} is already published by {first_desc}{line}",
                        e.protocol
                    ),
                );
            } else {
                seen.insert((port, e.protocol), path);
            }
        }
    }
}

/// Reports each dependency cycle once, as `a -> b -> a`, at the first edge of the cycle.
fn cycles(c: &mut Checker<'_>, d: &Deployment) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: HashMap<&str, Mark> =
        d.services.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();

    fn visit<'d>(
        c: &mut Checker<'_>,
        d: &'d Deployment,
        node: &'d str,
        stack: &mut Vec<(&'d str, usize)>,
        marks: &mut HashMap<&'d str, Mark>,
        reported: &mut BTreeSet<Vec<String>>,
    ) {
        marks.insert(node, Mark::Active);
        let Some(svc) = d.services.get(node) else {
            return;
        };
        for (i, dep) in svc.depends.iter().enumerate() {
            let next = dep.service.as_str();
            if next == node {
                continue; // reported as "depends on itself"
            }
            match marks.get(next).copied() {
                Some(Mark::New) => {
                    stack.push((node, i));
                    visit(c, d, next, stack, marks, reported);
                    stack.pop();
                }
                Some(Mark::Active) => {
                    stack.push((node, i));
                    let start = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                    let cycle: Vec<(&str, usize)> = stack[start..].to_vec();
                    stack.pop();
                    // Normalise (rotate to the smallest name) so each cycle is reported once.
                    let mut names: Vec<String> = cycle.iter().map(|(n, _)| n.to_string()).collect();
                    let min = names
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| n.as_str())
                        .map_or(0, |(i, _)| i);
                    names.rotate_left(min);
                    if reported.insert(names.clone()) {
                        let (first, edge) = cycle[min];
                        let mut text = names.join(" -> ");
                        text.push_str(" -> ");
                        text.push_str(&names[0]);
                        c.err(
                            &format!("services.{first}.depends[{edge}].service"),
                            format!("dependency cycle: {text}"),
                        );
                    }
                }
                _ => {}
            }
        }
        marks.insert(node, Mark::Done);
    }

    let names: Vec<&str> = d.services.keys().map(String::as_str).collect();
    for name in names {
        if marks.get(name) == Some(&Mark::New) {
            visit(c, d, name, &mut Vec::new(), &mut marks, &mut reported);
        }
    }
}

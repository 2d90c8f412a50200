//! zlayer-spec: the deployment spec of zlayer-agent.
//!
//! A spec file (`version: v1`, `deployment: NAME`, `services: {...}`) declares the services, jobs
//! and cron entries one node should run; `docs/spec.md` documents every field. This crate:
//! * parses YAML into [`Deployment`] with the line and column of every problem
//!   ([`parse_str`], [`parse_file`]), rejecting unknown fields with a "did you mean";
//! * validates names, ports, references and dependency cycles, collecting all errors;
//! * parses the value types ([`ByteSize`], [`HumanDuration`], [`Cpu`], cron [`Schedule`] with
//!   next-fire computation);
//! * plans a deploy ([`plan()`]) and hashes the container-shaping part of a service
//!   ([`Service::spec_hash`]).
//!
//! Pure logic: the only I/O is [`parse_file`] reading the file it is given.
//!
//! ```
//! let yaml = "version: v1\ndeployment: demo\nservices:\n  web:\n    image: busybox\n    replica: 2\n";
//! let err = zlayer_spec::parse_str(yaml, "demo.yaml").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "demo.yaml:6:5: unknown field `replica` in service \"web\", did you mean `replicas`?"
//! );
//!
//! let good = zlayer_spec::parse_str(&yaml.replace("replica:", "replicas:"), "demo.yaml").unwrap();
//! let plan = zlayer_spec::plan(&good, None);
//! assert_eq!(plan.to_string().lines().nth(1), Some("  + web (service): create 2 replicas"));
//! ```

pub mod cron;
pub mod decode;
pub mod envfile;
pub mod error;
pub mod model;
pub mod plan;
pub mod suggest;
pub mod units;
pub mod validate;
pub mod yaml;

use std::collections::BTreeSet;
use std::path::Path;

pub use cron::Schedule;
pub use decode::SourceMap;
pub use envfile::{env_file_entries, parse_env_file};
pub use error::{Location, SpecError, SpecErrors};
pub use model::*;
pub use plan::{plan, Action, Plan, ServicePlan};
pub use units::{ByteSize, Cpu, HumanDuration};

use error::Sink;

/// Parses and validates a spec given as text. `file_name` is only used in messages
/// (`demo.yaml:12:7: ...`).
pub fn parse_str(src: &str, file_name: &str) -> Result<Deployment, SpecErrors> {
    parse_str_with_map(src, file_name).map(|(d, _)| d)
}

/// Like [`parse_str`], also returning where each element was written, for callers that report
/// their own problems (e.g. "image not found") at a position in the file.
pub fn parse_str_with_map(
    src: &str,
    file_name: &str,
) -> Result<(Deployment, SourceMap), SpecErrors> {
    let mut sink = Sink::new(Some(file_name));
    let Some(root) = yaml::parse(src, &mut sink) else {
        if sink.errors.is_empty() {
            sink.push(
                Some(Location { line: 1, col: 1 }),
                "",
                "the file is empty; expected `version: v1`, `deployment:` and `services:`"
                    .to_owned(),
            );
        }
        return Err(SpecErrors::sorted(sink.errors));
    };
    let declared: BTreeSet<String> = decode::Decoder::declared_services(&root)
        .into_iter()
        .collect();
    let mut decoder = decode::Decoder::new(&mut sink);
    let decoded = decoder.deployment(&root);
    let map = std::mem::take(&mut decoder.spans);
    let incomplete = std::mem::take(&mut decoder.incomplete);
    if let Some(d) = &decoded {
        validate::check(d, Some(&map), &declared, &incomplete, &mut sink);
    }
    match decoded {
        Some(d) if sink.errors.is_empty() => Ok((d, map)),
        _ => Err(SpecErrors::sorted(sink.errors)),
    }
}

/// Reads and parses a spec file, then makes relative host paths (`env_file`, secret `source`,
/// bind `source`) absolute against the file's directory, so the daemon (whose working directory
/// differs from the CLI's) finds them.
pub fn parse_file(path: &Path) -> Result<Deployment, SpecErrors> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        SpecErrors(vec![SpecError {
            file: Some(name.clone()),
            location: None,
            path: String::new(),
            message: format!("cannot read spec file: {e}"),
        }])
    })?;
    let mut d = parse_str(&src, &name)?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    d.resolve_relative_paths(&base);
    Ok(d)
}

/// Validates a deployment that did not come from YAML (e.g. JSON over the API). Errors carry
/// paths (`services.web.replicas`) instead of positions.
pub fn validate(d: &Deployment) -> Result<(), SpecErrors> {
    let mut sink = Sink::new(None);
    if d.version != "v1" {
        sink.push(
            None,
            "version",
            format!(
                "unsupported spec version `{}`: this agent understands `v1`",
                d.version
            ),
        );
    }
    if d.deployment.is_empty() {
        sink.push(None, "deployment", "missing deployment name".to_owned());
    }
    if d.services.is_empty() {
        sink.push(
            None,
            "services",
            "`services` is empty; declare at least one service".to_owned(),
        );
    }
    for (name, s) in &d.services {
        if s.kind == Kind::Cron && s.schedule.is_none() {
            sink.push(
                None,
                &format!("services.{name}"),
                format!("service \"{name}\" is kind: cron but has no `schedule`"),
            );
        }
        // The YAML decoder enforces which fields each kind may have; JSON needs the same.
        let set = [
            ("replicas", s.replicas.is_some(), &[Kind::Service][..]),
            ("health", s.health.is_some(), &[Kind::Service][..]),
            ("restart", s.restart.is_some(), &[Kind::Service][..]),
            ("update", s.update.is_some(), &[Kind::Service][..]),
            ("retries", s.retries.is_some(), &[Kind::Job, Kind::Cron][..]),
            ("backoff", s.backoff.is_some(), &[Kind::Job, Kind::Cron][..]),
            ("timeout", s.timeout.is_some(), &[Kind::Job, Kind::Cron][..]),
            ("schedule", s.schedule.is_some(), &[Kind::Cron][..]),
            ("concurrency", s.concurrency.is_some(), &[Kind::Cron][..]),
            ("history", s.history.is_some(), &[Kind::Cron][..]),
        ];
        for (field, present, kinds) in set {
            if present && !kinds.contains(&s.kind) {
                sink.push(
                    None,
                    &format!("services.{name}.{field}"),
                    format!(
                        "`{field}` in service \"{name}\" does not apply to kind: {}",
                        s.kind
                    ),
                );
            }
        }
    }
    let declared: BTreeSet<String> = d.services.keys().cloned().collect();
    validate::check(d, None, &declared, &BTreeSet::new(), &mut sink);
    if sink.errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors::sorted(sink.errors))
    }
}

impl Deployment {
    /// Joins relative host paths (`env_file`, secret `source`, bind `source`) onto `base`.
    pub fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut String| {
            if !Path::new(p.as_str()).is_absolute() {
                *p = base.join(p.as_str()).display().to_string();
            }
        };
        for s in self.services.values_mut() {
            s.env_file.iter_mut().for_each(fix);
            s.secrets.iter_mut().for_each(|sec| fix(&mut sec.source));
            for m in &mut s.storage {
                if let Mount::Bind { source, .. } = m {
                    fix(source);
                }
            }
        }
    }

    /// Services in an order that starts dependencies first (ties by name). Cycles are rejected
    /// by validation; should one reach here anyway, the remaining services are appended by name.
    pub fn start_order(&self) -> Vec<&str> {
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut order = Vec::new();
        while order.len() < self.services.len() {
            let ready: Vec<&str> = self
                .services
                .iter()
                .filter(|(n, s)| {
                    !done.contains(n.as_str())
                        && s.depends.iter().all(|d| {
                            done.contains(d.service.as_str())
                                || !self.services.contains_key(&d.service)
                        })
                })
                .map(|(n, _)| n.as_str())
                .collect();
            if ready.is_empty() {
                order.extend(
                    self.services
                        .keys()
                        .map(String::as_str)
                        .filter(|n| !done.contains(n)),
                );
                break;
            }
            for n in ready {
                done.insert(n);
                order.push(n);
            }
        }
        order
    }
}

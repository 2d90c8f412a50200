//! `ps --filter`: which containers a listing keeps, with docker's semantics - values of one
//! key OR (`name=a --filter name=b`), different keys AND, except `label`, where every label
//! given must be present (docker's rule). The filter lives in the agent so that every front
//! end (the REST API, a Docker Engine API later) filters the same way.

use std::collections::BTreeMap;

use regex::Regex;
use zlayer_image::Reference;

use super::record::{ContainerRecord, ContainerState};

use crate::error::{AgentError, Result};

/// The keys `ps --filter` understands.
pub const CONTAINER_FILTER_KEYS: &[&str] = &["ancestor", "exited", "id", "label", "name", "status"];

/// docker's container statuses; the ones this agent has no such state for match nothing.
const DOCKER_STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// A parsed `ps --filter` set. The default keeps everything.
#[derive(Debug, Default)]
pub struct ContainerFilter {
    /// Unanchored regular expressions on the name, as docker.
    names: Vec<Regex>,
    /// Id prefixes.
    ids: Vec<String>,
    /// `key` or `key=value`; all must match.
    labels: Vec<(String, Option<String>)>,
    statuses: Vec<String>,
    /// Image references (normalised) or image id prefixes.
    ancestors: Vec<String>,
    /// Exit codes of exited containers.
    exit_codes: Vec<i64>,
}

fn invalid(key: &str, value: &str, why: &str) -> AgentError {
    AgentError::invalid(format!("invalid filter '{key}={value}': {why}"))
}

impl ContainerFilter {
    /// From docker's wire form: a JSON object of key → list of values
    /// (`{"name":["web"],"status":["exited"]}`), also its older key → {value: true} form.
    pub fn from_json(json: &str) -> Result<Self> {
        let pairs = parse_filter_json(json)?;
        Self::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// From `(key, value)` pairs; an unknown key or a bad value is refused, naming it.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut f = Self::default();
        for (key, value) in pairs {
            match key {
                "name" => {
                    f.names.push(Regex::new(value).map_err(|e| {
                        invalid(key, value, &format!("not a regular expression: {e}"))
                    })?)
                }
                "id" => f.ids.push(value.to_string()),
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                "status" => {
                    if !DOCKER_STATUSES.contains(&value) {
                        return Err(invalid(
                            key,
                            value,
                            &format!("status must be one of {}", DOCKER_STATUSES.join(", ")),
                        ));
                    }
                    f.statuses.push(value.to_string());
                }
                "ancestor" => f.ancestors.push(value.to_string()),
                "exited" => f.exit_codes.push(
                    value
                        .parse()
                        .map_err(|_| invalid(key, value, "expected an exit code (an integer)"))?,
                ),
                _ => {
                    return Err(AgentError::invalid(format!(
                        "invalid filter '{key}': known filters are {}",
                        CONTAINER_FILTER_KEYS.join(", ")
                    )))
                }
            }
        }
        Ok(f)
    }

    /// A `status` filter shows stopped containers without `-a`, as docker.
    pub fn has_status(&self) -> bool {
        !self.statuses.is_empty()
    }

    /// Whether `r` passes every key of the filter.
    pub fn matches(&self, r: &ContainerRecord) -> bool {
        let any = |set_empty: bool, hit: bool| set_empty || hit;
        any(
            self.names.is_empty(),
            self.names.iter().any(|re| re.is_match(&r.name)),
        ) && any(
            self.ids.is_empty(),
            self.ids.iter().any(|p| r.id.starts_with(p.as_str())),
        ) && self.labels.iter().all(|(k, v)| match r.labels.get(k) {
            Some(have) => v.as_ref().is_none_or(|want| want == have),
            None => false,
        }) && any(
            self.statuses.is_empty(),
            self.statuses.iter().any(|s| *s == state_name(r.state)),
        ) && any(
            self.ancestors.is_empty(),
            self.ancestors.iter().any(|a| is_ancestor(a, r)),
        ) && any(
            self.exit_codes.is_empty(),
            r.state == ContainerState::Exited
                && r.exit_code.is_some_and(|c| self.exit_codes.contains(&c)),
        )
    }
}

/// The state's wire name (`running`), as docker's `status` filter values are spelled.
fn state_name(s: ContainerState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `ancestor=` names the container's image: the same reference once normalised
/// (`busybox` = `docker.io/library/busybox:latest`), or a prefix of its image id.
fn is_ancestor(value: &str, r: &ContainerRecord) -> bool {
    let hex = |s: &str| s.strip_prefix("sha256:").unwrap_or(s).to_string();
    let by_id = {
        let want = hex(value);
        !want.is_empty()
            && want.chars().all(|c| c.is_ascii_hexdigit())
            && hex(&r.image_id).starts_with(&want)
    };
    let by_name = match (Reference::parse(value), Reference::parse(&r.image)) {
        (Ok(a), Ok(b)) => a.to_string() == b.to_string(),
        _ => value == r.image,
    };
    by_id || by_name
}

/// docker's `filters` query parameter as (key, value) pairs.
pub fn parse_filter_json(json: &str) -> Result<Vec<(String, String)>> {
    let bad = |e: String| AgentError::invalid(format!("invalid filters {json:?}: {e}"));
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut pairs = Vec::new();
    for (key, values) in map {
        match values {
            serde_json::Value::Array(list) => {
                for v in list {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("values of {key:?} must be strings")))?;
                    pairs.push((key.clone(), s.to_string()));
                }
            }
            serde_json::Value::Object(set) => {
                for (v, on) in set {
                    if on.as_bool() == Some(true) {
                        pairs.push((key.clone(), v));
                    }
                }
            }
            _ => return Err(bad(format!("{key:?} must map to a list of strings"))),
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, state: ContainerState, labels: &[(&str, &str)]) -> ContainerRecord {
        ContainerRecord {
            id: format!("{name:0>8}0123456789"),
            name: name.to_string(),
            image: "busybox:1.36".into(),
            image_id: "sha256:abcdef0123".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            spec: serde_json::json!({"cmd": ["true"]}),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state,
            pid: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            started_at: None,
            finished_at: None,
            auto_remove: false,
        }
    }

    fn filter(pairs: &[(&str, &str)]) -> ContainerFilter {
        ContainerFilter::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn same_key_ors_different_keys_and() {
        let web = record("web", ContainerState::Running, &[]);
        let db = record("db", ContainerState::Exited, &[]);
        let f = filter(&[("name", "web"), ("name", "db")]);
        assert!(f.matches(&web) && f.matches(&db));
        let f = filter(&[("name", "web"), ("status", "exited")]);
        assert!(!f.matches(&web) && !f.matches(&db));
        let f = filter(&[("name", "db"), ("status", "exited")]);
        assert!(f.matches(&db));
        assert!(ContainerFilter::default().matches(&web));
    }

    #[test]
    fn exited_matches_exit_codes_of_exited_containers() {
        let mut done = record("done", ContainerState::Exited, &[]);
        done.exit_code = Some(3);
        let running = record("up", ContainerState::Running, &[]);
        assert!(filter(&[("exited", "3")]).matches(&done));
        assert!(filter(&[("exited", "0"), ("exited", "3")]).matches(&done));
        assert!(!filter(&[("exited", "0")]).matches(&done));
        assert!(!filter(&[("exited", "3")]).matches(&running));
        assert!(ContainerFilter::from_pairs([("exited", "x")]).is_err());
    }

    #[test]
    fn name_is_an_unanchored_regex_and_id_a_prefix() {
        let r = record("frontend-1", ContainerState::Running, &[]);
        assert!(filter(&[("name", "end")]).matches(&r));
        assert!(filter(&[("name", "^front.*1$")]).matches(&r));
        assert!(!filter(&[("name", "^end")]).matches(&r));
        assert!(filter(&[("id", &r.id[..6])]).matches(&r));
        assert!(!filter(&[("id", "zz")]).matches(&r));
    }

    #[test]
    fn every_label_given_must_match() {
        let r = record(
            "a",
            ContainerState::Running,
            &[("tier", "front"), ("x", "1")],
        );
        assert!(filter(&[("label", "tier")]).matches(&r));
        assert!(filter(&[("label", "tier=front"), ("label", "x")]).matches(&r));
        assert!(!filter(&[("label", "tier=front"), ("label", "y")]).matches(&r));
        assert!(!filter(&[("label", "tier=back")]).matches(&r));
    }

    #[test]
    fn ancestor_matches_normalised_reference_or_id_prefix() {
        let r = record("a", ContainerState::Running, &[]);
        assert!(filter(&[("ancestor", "docker.io/library/busybox:1.36")]).matches(&r));
        assert!(filter(&[("ancestor", "abcdef")]).matches(&r));
        assert!(filter(&[("ancestor", "sha256:abcdef")]).matches(&r));
        assert!(!filter(&[("ancestor", "busybox")]).matches(&r));
        assert!(!filter(&[("ancestor", "alpine:1.36")]).matches(&r));
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = ContainerFilter::from_pairs([("colour", "red")]).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = ContainerFilter::from_pairs([("status", "sleepy")]).unwrap_err();
        assert!(e.to_string().contains("status=sleepy"), "{e}");
        let e = ContainerFilter::from_pairs([("name", "(")]).unwrap_err();
        assert!(e.to_string().contains("name=("), "{e}");
    }

    #[test]
    fn docker_wire_forms_are_read() {
        let f = ContainerFilter::from_json(r#"{"name":["web"],"status":{"exited":true}}"#).unwrap();
        assert!(f.has_status());
        assert!(f.matches(&record("web", ContainerState::Exited, &[])));
        assert!(ContainerFilter::from_json("[1]").is_err());
        assert!(ContainerFilter::from_json(r#"{"name":[1]}"#).is_err());
    }
}

//! Turns the spanned YAML tree into [`Deployment`], collecting every type error and unknown field
//! with its position and recording where each value came from (a [`SourceMap`]) so that
//! validation, which runs on the typed values, can point at lines and columns too.
//!
//! Written by hand instead of `#[derive(Deserialize)]` over YAML because serde stops at the first
//! error, its `deny_unknown_fields` message has no position or suggestion, and internally tagged
//! enums (`{type: http, ...}`) lose positions entirely.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use crate::error::{describe, Location, Sink};
use crate::model::*;
use crate::suggest::hint;
use crate::units::HumanDuration;
use crate::yaml::{Node, Value};

mod service;

/// Where each element of a parsed spec is in the source, by dotted path
/// (`services.web.endpoints[0].port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    map: HashMap<String, Location>,
}

impl SourceMap {
    /// The exact position of `path`, if it was written in the file.
    pub fn get(&self, path: &str) -> Option<Location> {
        self.map.get(path).copied()
    }

    /// The position of `path`, or of its closest written ancestor (a defaulted field points at
    /// the mapping that would contain it).
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(l) = self.map.get(p) {
                return Some(*l);
            }
            if p.is_empty() {
                return None;
            }
            p = match p.rfind(['.', '[']) {
                Some(i) => &p[..i],
                None => "",
            };
        }
    }

    pub(crate) fn insert(&mut self, path: &str, loc: Location) {
        self.map.entry(path.to_owned()).or_insert(loc);
    }
}

/// `a.b` + `c` = `a.b.c`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// "`replicas` in service "web"" for messages about one field.
fn field(path: &str) -> String {
    let (parent, last) = match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    format!("`{last}` in {}", describe(parent))
}

/// A mapping whose keys were checked against the allowed set.
struct Obj<'n> {
    path: String,
    loc: Location,
    entries: &'n [(Node, Node)],
}

impl<'n> Obj<'n> {
    /// The value of `key`, treating an explicit null like a missing key.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_key() == Some(key))
            .map(|(_, v)| v)
            .filter(|v| v.value != Value::Null)
    }

    fn key_loc(&self, key: &str) -> Option<Location> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_key() == Some(key))
            .map(|(k, _)| k.loc)
    }

    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.as_key() == Some(key))
    }

    fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

pub(crate) struct Decoder<'s> {
    sink: &'s mut Sink,
    pub spans: SourceMap,
    /// Services that had decode errors. They are still returned (with the failed parts left at
    /// defaults, failed lists empty) so their other fields get validated in the same run, but
    /// checks of other services that look into them are skipped to avoid follow-on errors.
    pub incomplete: BTreeSet<String>,
}

impl<'s> Decoder<'s> {
    pub fn new(sink: &'s mut Sink) -> Decoder<'s> {
        Decoder {
            sink,
            spans: SourceMap::default(),
            incomplete: BTreeSet::new(),
        }
    }

    fn err(&mut self, loc: Location, path: &str, msg: String) {
        self.sink.push(Some(loc), path, msg);
    }

    fn expected(&mut self, n: &Node, path: &str, what: &str) {
        self.err(
            n.loc,
            path,
            format!("{}: expected {what}, found {}", field(path), n.kind_name()),
        );
    }

    /// Checks that `n` is a mapping with only `allowed` keys.
    fn obj<'n>(&mut self, n: &'n Node, path: &str, allowed: &[&str]) -> Option<Obj<'n>> {
        self.spans.insert(path, n.loc);
        let Value::Map(entries) = &n.value else {
            let msg = if path.is_empty() {
                format!("the spec file: expected a mapping with `version`, `deployment` and `services`, found {}", n.kind_name())
            } else {
                format!(
                    "{}: expected a mapping, found {}",
                    field(path),
                    n.kind_name()
                )
            };
            self.err(n.loc, path, msg);
            return None;
        };
        for (k, v) in entries {
            let key = k.as_key().unwrap_or_default();
            self.spans.insert(&join(path, key), v.loc);
            // Top-level `x-...` keys are extension fields, ignored: a place for YAML anchors
            // shared by several services (as in Compose files).
            let extension = path.is_empty() && key.starts_with("x-");
            if !allowed.contains(&key) && !extension {
                let suggestion = hint(key, allowed.iter().copied());
                let msg = if suggestion.is_empty() {
                    format!(
                        "unknown field `{key}` in {}; known fields: {}",
                        describe(path),
                        allowed.join(", ")
                    )
                } else {
                    format!("unknown field `{key}` in {}{suggestion}", describe(path))
                };
                self.err(k.loc, &join(path, key), msg);
            }
        }
        Some(Obj {
            path: path.to_owned(),
            loc: n.loc,
            entries,
        })
    }

    fn require<'n>(&mut self, o: &Obj<'n>, key: &str) -> Option<&'n Node> {
        let v = o.get(key);
        if v.is_none() {
            let loc = o.key_loc(key).unwrap_or(o.loc);
            self.err(
                loc,
                &o.child(key),
                format!("missing field `{key}` in {}", describe(&o.path)),
            );
        }
        v
    }

    fn string(&mut self, n: &Node, path: &str) -> Option<String> {
        self.spans.insert(path, n.loc);
        match &n.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.expected(n, path, "a string");
                None
            }
        }
    }

    fn nonempty_string(&mut self, n: &Node, path: &str) -> Option<String> {
        let s = self.string(n, path)?;
        if s.trim().is_empty() {
            self.err(n.loc, path, format!("{}: must not be empty", field(path)));
            return None;
        }
        Some(s)
    }

    /// An unsigned integer written unquoted, within `min..=max`.
    fn uint(&mut self, n: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        self.spans.insert(path, n.loc);
        let parsed = match &n.value {
            Value::Scalar { text, plain: true } => {
                let t = text.replace('_', "");
                if let Some(hex) = t.strip_prefix("0x") {
                    u64::from_str_radix(hex, 16).ok()
                } else if let Some(oct) = t.strip_prefix("0o") {
                    u64::from_str_radix(oct, 8).ok()
                } else {
                    t.parse::<u64>().ok()
                }
            }
            _ => None,
        };
        let range = if max >= u64::from(u32::MAX) {
            format!("a whole number >= {min}")
        } else {
            format!("a whole number {min}..{max}")
        };
        match parsed {
            Some(v) if (min..=max).contains(&v) => Some(v),
            Some(v) => {
                self.err(
                    n.loc,
                    path,
                    format!("{}: {v} is out of range, expected {range}", field(path)),
                );
                None
            }
            None => {
                self.expected(n, path, &range);
                None
            }
        }
    }

    fn u32(&mut self, n: &Node, path: &str) -> Option<u32> {
        self.uint(n, path, 0, u64::from(u32::MAX)).map(|v| v as u32)
    }

    fn port(&mut self, n: &Node, path: &str) -> Option<u16> {
        self.uint(n, path, 1, 65535).map(|v| v as u16)
    }

    fn boolean(&mut self, n: &Node, path: &str) -> Option<bool> {
        self.spans.insert(path, n.loc);
        match &n.value {
            Value::Scalar { text, plain: true }
                if matches!(text.as_str(), "true" | "True" | "TRUE") =>
            {
                Some(true)
            }
            Value::Scalar { text, plain: true }
                if matches!(text.as_str(), "false" | "False" | "FALSE") =>
            {
                Some(false)
            }
            _ => {
                self.expected(n, path, "true or false");
                None
            }
        }
    }

    /// A scalar parsed with `FromStr` (sizes, durations, CPU, schedules).
    fn parsed<T: FromStr>(&mut self, n: &Node, path: &str) -> Option<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.string(n, path)?;
        match text.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(n.loc, path, format!("{}: {e}", field(path)));
                None
            }
        }
    }

    fn duration(&mut self, n: &Node, path: &str) -> Option<HumanDuration> {
        self.parsed(n, path)
    }

    /// One of a fixed set of words, with a suggestion for near misses.
    fn choice<'c>(&mut self, n: &Node, path: &str, options: &[&'c str]) -> Option<&'c str> {
        let text = self.string(n, path)?;
        if let Some(o) = options.iter().find(|o| **o == text) {
            return Some(o);
        }
        let suggestion = hint(&text, options.iter().copied());
        let msg = if suggestion.is_empty() {
            format!(
                "{}: invalid value `{text}`, expected one of: {}",
                field(path),
                options.join(", ")
            )
        } else {
            format!("{}: invalid value `{text}`{suggestion}", field(path))
        };
        self.err(n.loc, path, msg);
        None
    }

    fn list<'n>(&mut self, n: &'n Node, path: &str) -> Option<&'n [Node]> {
        self.spans.insert(path, n.loc);
        match &n.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(n, path, "a list");
                None
            }
        }
    }

    /// A list of strings (an argv); `None` if any item is bad.
    fn strings(&mut self, n: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.list(n, path)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &index(path, i)) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Decodes each item of a list with `f`. Every item is decoded (so all errors are
    /// reported), but the result is `None` if any failed: validation addresses items by index,
    /// which must match the file.
    fn each<T>(
        &mut self,
        n: Option<&Node>,
        path: &str,
        mut f: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(n) = n else { return Some(Vec::new()) };
        let items = self.list(n, path)?;
        let decoded: Vec<Option<T>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| f(self, item, &index(path, i)))
            .collect();
        decoded.into_iter().collect()
    }

    pub fn deployment(&mut self, root: &Node) -> Option<Deployment> {
        let o = self.obj(root, "", &["version", "deployment", "services"])?;
        let version = self.require(&o, "version").and_then(|n| {
            let v = self.string(n, "version")?;
            if v != "v1" {
                self.err(
                    n.loc,
                    "version",
                    format!("unsupported spec version `{v}`: this agent understands `v1`"),
                );
                return None;
            }
            Some(v)
        });
        let name = self
            .require(&o, "deployment")
            .and_then(|n| self.nonempty_string(n, "deployment"));
        let mut services = BTreeMap::new();
        if let Some(n) = self.require(&o, "services") {
            if let Value::Map(entries) = &n.value {
                self.spans.insert("services", n.loc);
                if entries.is_empty() {
                    self.err(
                        n.loc,
                        "services",
                        "`services` is empty; declare at least one service".to_owned(),
                    );
                }
                for (k, v) in entries {
                    let svc_name = k.as_key().unwrap_or_default().to_owned();
                    let path = join("services", &svc_name);
                    self.spans.insert(&format!("{path}#key"), k.loc);
                    let before = self.sink.errors.len();
                    if let Some(svc) = self.service(v, &path) {
                        services.insert(svc_name.clone(), svc);
                    }
                    if self.sink.errors.len() > before {
                        self.incomplete.insert(svc_name);
                    }
                }
            } else {
                self.expected(n, "services", "a mapping of service names to services");
            }
        }
        // Missing/invalid version or name were reported; keep going with placeholders so the
        // services are still validated and every error is reported in one run.
        Some(Deployment {
            version: version.unwrap_or_default(),
            deployment: name.unwrap_or_default(),
            services,
        })
    }

    /// The names under `services:` as written, including entries that failed to decode, so
    /// validation does not report "unknown service" for a service that merely had a type error.
    pub fn declared_services(root: &Node) -> Vec<String> {
        let Value::Map(top) = &root.value else {
            return Vec::new();
        };
        let services = top
            .iter()
            .find(|(k, _)| k.as_key() == Some("services"))
            .map(|(_, v)| v);
        match services.map(|s| &s.value) {
            Some(Value::Map(entries)) => entries
                .iter()
                .filter_map(|(k, _)| k.as_key().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

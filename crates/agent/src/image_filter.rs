//! `images --filter`: `reference=PATTERN`, `dangling=true|false`, `label=KEY[=VALUE]`, with
//! docker's semantics: values of one key OR, keys AND, every label given must be present;
//! a reference pattern is a shell glob (`*` stops at `/`) on the familiar name with its tag
//! (`busybox:1.36`) or without (`busybox`), and only the matching names of an image are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use glob::{MatchOptions, Pattern};

use crate::error::{AgentError, Result};
use crate::images::ImageSummary;
use crate::Agent;

/// The keys `images --filter` understands.
pub const IMAGE_FILTER_KEYS: &[&str] = &["dangling", "label", "reference"];

/// A parsed `images --filter` set. The default keeps everything.
#[derive(Debug, Default)]
pub struct ImageFilter {
    references: Vec<Pattern>,
    dangling: Option<bool>,
    labels: Vec<(String, Option<String>)>,
}

/// `path.Match`'s rule: a wildcard does not cross `/`.
const GLOB: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// docker's short form of a normalised name: `docker.io/library/busybox:1` → `busybox:1`.
fn familiar(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

/// The name without tag or digest: `busybox:1` → `busybox`, `host:5000/a:t` → `host:5000/a`.
fn without_tag(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}

impl ImageFilter {
    /// From docker's wire form (`{"reference":["busy*"],"dangling":["true"]}`).
    pub fn from_json(json: &str) -> Result<Self> {
        let pairs = crate::containers::filter::parse_filter_json(json)?;
        Self::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// From `(key, value)` pairs; an unknown key or bad value is refused, naming it.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut f = Self::default();
        let invalid = |k: &str, v: &str, why: &str| {
            AgentError::invalid(format!("invalid filter '{k}={v}': {why}"))
        };
        for (key, value) in pairs {
            match key {
                "reference" => f.references.push(
                    Pattern::new(value)
                        .map_err(|e| invalid(key, value, &format!("bad pattern: {e}")))?,
                ),
                "dangling" => {
                    let want = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(invalid(key, value, "expected true or false")),
                    };
                    if f.dangling.is_some_and(|d| d != want) {
                        return Err(invalid(key, value, "dangling given as both true and false"));
                    }
                    f.dangling = Some(want);
                }
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                _ => {
                    return Err(AgentError::invalid(format!(
                        "invalid filter '{key}': known filters are {}",
                        IMAGE_FILTER_KEYS.join(", ")
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Whether a label filter needs each image's config read.
    pub fn needs_labels(&self) -> bool {
        !self.labels.is_empty()
    }

    fn name_matches(&self, name: &str) -> bool {
        let short = familiar(name);
        self.references.iter().any(|p| {
            p.matches_with(short, GLOB)
                || p.matches_with(without_tag(short), GLOB)
                || p.matches_with(name, GLOB)
        })
    }

    /// The image as the listing shows it (only its matching names), or `None` when the
    /// filter drops it. `labels` are the image config's labels (read when
    /// [`needs_labels`](Self::needs_labels)).
    pub fn apply(
        &self,
        mut image: ImageSummary,
        labels: &BTreeMap<String, String>,
    ) -> Option<ImageSummary> {
        if let Some(d) = self.dangling {
            if image.names.is_empty() != d {
                return None;
            }
        }
        let labels_ok = self.labels.iter().all(|(k, v)| match labels.get(k) {
            Some(have) => v.as_ref().is_none_or(|want| want == have),
            None => false,
        });
        if !labels_ok {
            return None;
        }
        if !self.references.is_empty() {
            image.names.retain(|n| self.name_matches(n));
            if image.names.is_empty() {
                return None;
            }
        }
        Some(image)
    }
}

impl Agent {
    /// `images [--filter ...]`.
    pub async fn list_images_matching(
        self: &Arc<Self>,
        filter: ImageFilter,
    ) -> Result<Vec<ImageSummary>> {
        self.run_blocking(move |a| {
            let mut kept = Vec::new();
            for image in a.list_images_blocking()? {
                let labels = if filter.needs_labels() {
                    a.images()
                        .config(&image.id.to_string())
                        .map_err(crate::images::store_err)?
                        .config()
                        .as_ref()
                        .and_then(|c| c.labels().clone())
                        .unwrap_or_default()
                        .into_iter()
                        .collect()
                } else {
                    BTreeMap::new()
                };
                kept.extend(filter.apply(image, &labels));
            }
            Ok(kept)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(names: &[&str]) -> ImageSummary {
        let digest = format!("sha256:{}", "ab".repeat(32));
        serde_json::from_value(serde_json::json!({
            "names": names,
            "id": digest,
            "manifest_digest": digest,
            "created": null,
            "size": 1,
        }))
        .unwrap()
    }

    fn names(f: &[(&str, &str)], img: &[&str]) -> Option<Vec<String>> {
        let f = ImageFilter::from_pairs(f.iter().copied()).unwrap();
        f.apply(image(img), &BTreeMap::new()).map(|i| i.names)
    }

    #[test]
    fn reference_globs_the_familiar_name_with_or_without_tag() {
        let img = [
            "docker.io/library/busybox:1.36",
            "docker.io/library/busybox:latest",
        ];
        assert_eq!(names(&[("reference", "busybox")], &img).unwrap().len(), 2);
        assert_eq!(
            names(&[("reference", "busybox:1*")], &img).unwrap(),
            ["docker.io/library/busybox:1.36"]
        );
        assert!(names(&[("reference", "alpine")], &img).is_none());
        assert!(names(&[("reference", "*")], &["127.0.0.1:5000/a/b:t"]).is_none());
        assert!(names(
            &[("reference", "127.0.0.1:5000/a/*")],
            &["127.0.0.1:5000/a/b:t"]
        )
        .is_some());
        // Same key ORs.
        assert!(names(&[("reference", "alpine"), ("reference", "busy*")], &img).is_some());
    }

    #[test]
    fn dangling_selects_images_without_names() {
        assert!(names(&[("dangling", "true")], &[]).is_some());
        assert!(names(&[("dangling", "true")], &["busybox:1"]).is_none());
        assert!(names(&[("dangling", "false")], &["busybox:1"]).is_some());
        assert!(ImageFilter::from_pairs([("dangling", "maybe")]).is_err());
    }

    #[test]
    fn every_label_must_match() {
        let f = ImageFilter::from_pairs([("label", "a=1"), ("label", "b")]).unwrap();
        let both: BTreeMap<_, _> =
            [("a".to_string(), "1".to_string()), ("b".into(), "x".into())].into();
        let one: BTreeMap<_, _> = [("a".to_string(), "1".to_string())].into();
        assert!(f.apply(image(&["x:1"]), &both).is_some());
        assert!(f.apply(image(&["x:1"]), &one).is_none());
        assert!(f.needs_labels());
    }

    #[test]
    fn unknown_keys_and_bad_patterns_are_named() {
        let e = ImageFilter::from_pairs([("before", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("before"), "{e}");
        let e = ImageFilter::from_pairs([("reference", "[")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("reference=["), "{e}");
    }
}

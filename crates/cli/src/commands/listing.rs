//! The placeholder fields of `ps --format` and `images --format`: docker's field names and
//! headers, and each listing's values as docker's formatter shows them.

use zlayer_agent::containers::query::ago;
use zlayer_agent::containers::ContainerSummary;
use zlayer_agent::images::ImageSummary;

use crate::template::{Field, Row};

/// A `--filter KEY=VALUE` flag's value, checked for its `=` (clap's value parser).
pub fn filter_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_lowercase(), v.to_string())),
        _ => Err(format!("bad format of filter {s:?} (expected name=value)")),
    }
}

/// `--filter` flags as docker's `filters` query parameter (`&filters=...`), or nothing.
pub fn filters_query(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut map: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    let json = serde_json::to_string(&map).unwrap_or_default();
    format!("&filters={}", zlayer_api::client::encode_query(&json))
}

const fn field(name: &'static str, header: &'static str) -> Field {
    Field { name, header }
}

/// `ps --format` fields.
pub const PS_FIELDS: &[Field] = &[
    field("ID", "CONTAINER ID"),
    field("Image", "IMAGE"),
    field("Command", "COMMAND"),
    field("CreatedAt", "CREATED AT"),
    field("RunningFor", "CREATED"),
    field("Ports", "PORTS"),
    field("State", "STATE"),
    field("Status", "STATUS"),
    field("Names", "NAMES"),
    field("Labels", "LABELS"),
];

/// `images --format` fields.
pub const IMAGE_FIELDS: &[Field] = &[
    field("ID", "IMAGE ID"),
    field("Repository", "REPOSITORY"),
    field("Tag", "TAG"),
    field("Digest", "DIGEST"),
    field("CreatedSince", "CREATED"),
    field("CreatedAt", "CREATED AT"),
    field("Size", "SIZE"),
];

/// An RFC 3339 time as docker's `CreatedAt` prints it: `2026-12-03 19:33:16 +0000 UTC`.
fn docker_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S +0000 UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn since(rfc3339: Option<&str>) -> String {
    let a = ago(rfc3339);
    if a.is_empty() {
        a
    } else {
        format!("{a} ago")
    }
}

/// The `ps` command text: quoted, shortened to 30 characters with an ellipsis.
pub fn short_command(command: &str) -> String {
    let cmd = if command.chars().count() > 30 {
        command.chars().take(29).collect::<String>() + "…"
    } else {
        command.to_string()
    };
    format!("\"{cmd}\"")
}

/// One container's `ps` fields.
pub fn ps_row(c: &ContainerSummary) -> Row {
    let state = serde_json::to_value(c.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut row = Row::from([
        ("ID", c.id.chars().take(12).collect()),
        ("Image", c.image.clone()),
        ("Command", short_command(&c.command)),
        ("CreatedAt", docker_time(&c.created_at)),
        ("RunningFor", since(Some(&c.created_at))),
        ("Ports", c.ports.join(", ")),
        ("State", state),
        ("Status", c.status.clone()),
        ("Names", c.name.clone()),
        ("Labels", labels.join(",")),
    ]);
    row.labels = c.labels.clone();
    row
}

/// Splits a normalised name into (repository as docker shows it, tag).
pub fn repo_and_tag(name: &str) -> (String, String) {
    let (name, digest) = match name.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (name, None),
    };
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], name[slash + i + 1..].to_string()),
        None => (
            name,
            digest.map(|_| "<none>".to_string()).unwrap_or_default(),
        ),
    };
    let repo = repo
        .strip_prefix("docker.io/library/")
        .or_else(|| repo.strip_prefix("docker.io/"))
        .unwrap_or(repo);
    (repo.to_string(), tag)
}

/// An image's `images` rows: one per name, one `<none>:<none>` row for a dangling image.
pub fn image_rows(i: &ImageSummary) -> Vec<Row> {
    let names = if i.names.is_empty() {
        vec![String::new()]
    } else {
        i.names.clone()
    };
    names
        .iter()
        .map(|n| {
            let (repo, tag) = if n.is_empty() {
                ("<none>".to_string(), "<none>".to_string())
            } else {
                repo_and_tag(n)
            };
            Row::from([
                ("ID", i.id.short().to_string()),
                ("Repository", repo),
                ("Tag", tag),
                ("Digest", i.manifest_digest.to_string()),
                ("CreatedSince", since(i.created.as_deref())),
                (
                    "CreatedAt",
                    i.created.as_deref().map(docker_time).unwrap_or_default(),
                ),
                ("Size", crate::output::human_size(i.size)),
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_dockers_json() {
        assert!(filter_pair("nameweb").is_err());
        assert!(filter_pair("=web").is_err());
        let pairs: Vec<_> = ["name=web", "Name=db", "label=a=b"]
            .iter()
            .map(|s| filter_pair(s).unwrap())
            .collect();
        let q = filters_query(&pairs);
        let json = q.strip_prefix("&filters=").unwrap();
        assert!(!json.contains('{'), "encoded: {json}");
        assert_eq!(filters_query(&[]), "");
    }

    #[test]
    fn created_at_reads_like_docker() {
        assert_eq!(
            docker_time("2026-12-03T19:33:16.123+01:00"),
            "2026-12-03 18:33:16 +0000 UTC"
        );
    }

    #[test]
    fn long_commands_are_shortened_and_quoted() {
        assert_eq!(short_command("sh"), "\"sh\"");
        let long = "x".repeat(40);
        assert_eq!(short_command(&long).chars().count(), 32);
    }
}

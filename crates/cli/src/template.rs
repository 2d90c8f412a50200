//! `--format` for listings: `table`, `json`, or a Go-template of docker's placeholder subset
//! (`'{{.Names}}'`, `'{{.ID}}\t{{.Status}}'`, `'table {{.ID}}\t{{.Image}}'`, `'{{json .}}'`,
//! `'{{.Label "key"}}'`).
//!
//! Hand-written on purpose: scripts written for docker use only field lookups, `json`, the
//! `table` prefix and the `\t`/`\n` escapes; a full Go `text/template` engine (the `gtmpl`
//! crate) would accept pipelines and functions that then evaluate against fields docker has
//! and this agent does not, failing later and less clearly. This subset fails at parse time
//! with the unknown field's name.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One placeholder field of a listing: its template name and its table header.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub header: &'static str,
}

/// A row of a listing: field name → text, as docker's formatter shows it, and the labels
/// `{{.Label "key"}}` reads.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub fields: BTreeMap<&'static str, String>,
    pub labels: BTreeMap<String, String>,
}

impl<const N: usize> From<[(&'static str, String); N]> for Row {
    fn from(fields: [(&'static str, String); N]) -> Self {
        Self {
            fields: fields.into(),
            labels: BTreeMap::new(),
        }
    }
}

/// What `--format` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// The default aligned table.
    #[default]
    Table,
    /// The API's objects as pretty JSON (the `--format json` kept from before).
    Json,
    /// A Go-template of the placeholder subset.
    Template(Template),
}

impl FromStr for ListFormat {
    type Err = TemplateError;
    fn from_str(s: &str) -> Result<Self, TemplateError> {
        match s.trim() {
            "" | "table" => Ok(Self::Table),
            "json" => Ok(Self::Json),
            _ => Template::parse(s).map(Self::Template),
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `{{.Name}}`.
    Field(String),
    /// `{{json .}}` (`None`) or `{{json .Name}}`.
    Json(Option<String>),
    /// `{{.Label "key"}}`: one label's value.
    Label(String),
}

/// A parsed `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Began with `table `: print a header line and align the `\t`-separated columns.
    table: bool,
    parts: Vec<Part>,
}

/// Why a `--format` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err(text: &str, msg: impl fmt::Display) -> TemplateError {
    TemplateError(format!("--format {text:?}: {msg}"))
}

/// `.Name` → `Name`, refusing anything that is not a plain field lookup.
fn field_name(text: &str, arg: &str) -> Result<String, TemplateError> {
    let name = arg
        .strip_prefix('.')
        .ok_or_else(|| err(text, format!("expected a field like .ID, found {arg:?}")))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(err(text, format!("{arg:?} is not a field name")));
    }
    Ok(name.to_string())
}

/// The key of `.Label "key"`: one double-quoted string without escapes.
fn label_key(text: &str, action: &str) -> Result<String, TemplateError> {
    let quoted = action[".Label".len()..].trim();
    match quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        Some(key) if !key.contains(['"', '\\']) => Ok(key.to_string()),
        _ => Err(err(
            text,
            format!("{{{{{action}}}}}: expected {{{{.Label \"key\"}}}}"),
        )),
    }
}

impl Template {
    /// Parses the placeholder subset; `\t` and `\n` written as two characters become a tab
    /// and a newline, as docker's formatter does.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let unescaped = text.replace("\\t", "\t").replace("\\n", "\n");
        let (table, mut rest) = match unescaped.strip_prefix("table") {
            Some(r) if r.starts_with(char::is_whitespace) => (true, r.trim_start_matches(' ')),
            _ => (false, unescaped.as_str()),
        };
        let mut parts = Vec::new();
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| err(text, "unclosed action: \"{{\" without \"}}\""))?;
            let action = after[..close].trim();
            let words: Vec<&str> = action.split_whitespace().collect();
            parts.push(match words.as_slice() {
                [field] if field.starts_with('.') => Part::Field(field_name(text, field)?),
                ["json", "."] => Part::Json(None),
                ["json", field] => Part::Json(Some(field_name(text, field)?)),
                [".Label", _, ..] => Part::Label(label_key(text, action)?),
                _ => {
                    return Err(err(
                        text,
                        format!(
                            "unsupported action {{{{{action}}}}}: only {{{{.Field}}}}, \
                             {{{{json .}}}}, {{{{json .Field}}}} and {{{{.Label \"key\"}}}} \
                             are understood"
                        ),
                    ))
                }
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { table, parts })
    }

    /// Refuses a field the listing does not have, naming it and the ones it has.
    pub fn check(&self, fields: &[Field]) -> Result<(), TemplateError> {
        for part in &self.parts {
            let name = match part {
                Part::Field(n) | Part::Json(Some(n)) => n.as_str(),
                // Labels are there when the listing has a Labels field.
                Part::Label(_) => "Labels",
                _ => continue,
            };
            if !fields.iter().any(|f| f.name == name) {
                let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
                return Err(TemplateError(format!(
                    "--format: unknown field .{name} (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The text for one row.
    pub fn render(&self, row: &Row) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(n) => {
                    out.push_str(row.fields.get(n.as_str()).map_or("", String::as_str));
                }
                Part::Label(k) => out.push_str(row.labels.get(k).map_or("", String::as_str)),
                Part::Json(None) => {
                    out.push_str(&serde_json::to_string(&row.fields).unwrap_or_default());
                }
                Part::Json(Some(n)) => {
                    let v = row.fields.get(n.as_str()).cloned().unwrap_or_default();
                    out.push_str(&serde_json::to_string(&v).unwrap_or_default());
                }
            }
        }
        out
    }

    /// The header line of a `table` template: each field replaced by its header.
    fn header(&self, fields: &[Field]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(n) | Part::Json(Some(n)) => out.push_str(
                    fields
                        .iter()
                        .find(|f| f.name == n)
                        .map_or(n.as_str(), |f| f.header),
                ),
                Part::Label(k) => out.push_str(&format!("LABEL {k}")),
                Part::Json(None) => {}
            }
        }
        out
    }

    /// All output lines for `rows`: with `table`, a header and columns aligned at the tabs.
    pub fn lines(&self, fields: &[Field], rows: &[Row]) -> Vec<String> {
        let rendered: Vec<String> = rows.iter().map(|r| self.render(r)).collect();
        if !self.table {
            return rendered;
        }
        let mut all = vec![self.header(fields)];
        all.extend(rendered);
        align_tabs(&all)
    }
}

/// Aligns `\t`-separated cells like docker's tabwriter (minimum width 10, padding 3); the
/// text after a line's last tab is not padded.
fn align_tabs(lines: &[String]) -> Vec<String> {
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &cells {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (cell.chars().count() + 3).max(10);
            match widths.get_mut(i) {
                Some(old) => *old = (*old).max(w),
                None => widths.push(w),
            }
        }
    }
    cells
        .iter()
        .map(|row| {
            let mut s = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}", w = widths[i]));
                }
            }
            s.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[Field] = &[
        Field {
            name: "ID",
            header: "CONTAINER ID",
        },
        Field {
            name: "Names",
            header: "NAMES",
        },
        Field {
            name: "Status",
            header: "STATUS",
        },
    ];

    fn row(id: &str, name: &str, status: &str) -> Row {
        Row::from([
            ("ID", id.to_string()),
            ("Names", name.to_string()),
            ("Status", status.to_string()),
        ])
    }

    fn template(text: &str) -> Template {
        match text.parse::<ListFormat>().unwrap() {
            ListFormat::Template(t) => t,
            other => panic!("{text:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn keywords_and_templates_are_told_apart() {
        assert_eq!("json".parse::<ListFormat>().unwrap(), ListFormat::Json);
        assert_eq!("table".parse::<ListFormat>().unwrap(), ListFormat::Table);
        assert!(matches!(
            "{{.ID}}".parse::<ListFormat>().unwrap(),
            ListFormat::Template(_)
        ));
    }

    #[test]
    fn fields_are_substituted_and_escapes_expanded() {
        let t = template(r"{{.ID}}\t{{ .Status }}\n-{{.Names}}");
        assert_eq!(
            t.render(&row("abc", "web", "Up 1 second")),
            "abc\tUp 1 second\n-web"
        );
        let lines = t.lines(FIELDS, &[row("a", "b", "c"), row("d", "e", "f")]);
        assert_eq!(lines, ["a\tc\n-b", "d\tf\n-e"]);
    }

    #[test]
    fn json_dot_is_the_whole_row_and_json_field_one_string() {
        let t = template("{{json .}}");
        let out = t.render(&row("abc", "web", "Up"));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ID"], "abc");
        assert_eq!(v["Names"], "web");
        assert_eq!(
            template("{{json .Names}}").render(&row("a", "w\"x", "")),
            r#""w\"x""#
        );
    }

    #[test]
    fn table_prefix_adds_header_and_aligns_columns() {
        let t = template(r"table {{.ID}}\t{{.Names}}");
        let lines = t.lines(
            FIELDS,
            &[row("abc", "web", ""), row("0123456789abcd", "db", "")],
        );
        assert_eq!(
            lines,
            [
                "CONTAINER ID     NAMES",
                "abc              web",
                "0123456789abcd   db"
            ]
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let t = template("{{.ID}} {{.Nmes}}");
        let e = t.check(FIELDS).unwrap_err().to_string();
        assert!(e.contains(".Nmes"), "{e}");
        assert!(e.contains("Names"), "{e}");
        assert!(template("{{json .}}").check(FIELDS).is_ok());
    }

    #[test]
    fn unsupported_syntax_is_refused_with_the_text() {
        for bad in ["{{.ID", "{{upper .ID}}", "{{.}}", "{{.A.B}}", "{{ID}}"] {
            let e = bad.parse::<ListFormat>().unwrap_err().to_string();
            assert!(e.contains("--format"), "{bad}: {e}");
        }
    }

    #[test]
    fn label_action_reads_one_label() {
        let mut r = row("1", "", "");
        r.labels.insert("com.example.tier".into(), "front".into());
        let t = template(r#"{{.Label "com.example.tier"}}/{{.Label "absent"}}"#);
        assert_eq!(t.render(&r), "front/");
        let labelled = [Field {
            name: "Labels",
            header: "LABELS",
        }];
        assert!(t.check(&labelled).is_ok());
        assert!(t.check(FIELDS).is_err());
        assert!("{{.Label tier}}".parse::<ListFormat>().is_err());
    }

    #[test]
    fn literal_text_without_actions_is_kept() {
        assert_eq!(template("x-{{.ID}}-y").render(&row("1", "", "")), "x-1-y");
    }
}

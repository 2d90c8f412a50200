//! The one env-file parser, for both `zlayer-agent run --env-file` and a service's `env_file`.
//!
//! The format is the one `docker run --env-file` reads, so files move between the two unchanged:
//! one `KEY=VALUE` per line; `#` comments and blank lines skipped; leading whitespace of a line
//! ignored; a UTF-8 byte-order mark at the start of the file ignored; the value taken literally
//! (no quote removal, no `$VAR` expansion, trailing spaces kept); a bare `KEY` line names a
//! variable to copy from the caller's environment. A name that is empty or contains whitespace,
//! and a NUL byte anywhere (the kernel's environment cannot carry one), are errors naming the
//! file and line. Every bad line is reported, not only the first.
//!
//! What a bare `KEY` means is the caller's policy: [`env_file_entries`] (the CLI) copies it from
//! the environment like docker; a deployment spec rejects it (see
//! [`crate::model::Service::resolve_env`]) because host variables are named in the spec with
//! `{from_host: VAR}`.

use std::fmt;

use crate::error::{Location, Sink, SpecErrors};

/// One variable line of an env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileLine {
    /// Where the name starts (1-based line and character column).
    pub location: Location,
    /// The variable name, as written.
    pub key: String,
    /// The literal text after the first `=`; `None` for a bare `KEY` line.
    pub value: Option<String>,
}

/// What is wrong with one env-file line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvFileErrorKind {
    /// `=value` with nothing before the `=`.
    EmptyName,
    /// The name contains whitespace (`A B=1`, or `A =1`).
    NameHasWhitespace(String),
    /// The line contains a NUL byte.
    Nul,
}

impl fmt::Display for EnvFileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvFileErrorKind::EmptyName => write!(f, "no variable name before `=`"),
            EnvFileErrorKind::NameHasWhitespace(name) => {
                write!(f, "variable name `{name}` contains whitespace")
            }
            EnvFileErrorKind::Nul => write!(f, "the line contains a NUL byte"),
        }
    }
}

/// A bad line in an env file: `file:line:col: what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{location}: {kind}")]
pub struct EnvFileError {
    /// The file name as the caller gave it.
    pub file: String,
    /// Where on the line the problem starts.
    pub location: Location,
    /// What is wrong.
    pub kind: EnvFileErrorKind,
}

/// Every bad line of one env file, in file order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileErrors(pub Vec<EnvFileError>);

impl fmt::Display for EnvFileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::error::write_lines(f, &self.0)
    }
}

impl std::error::Error for EnvFileErrors {}

/// Parses env-file text into its variable lines; `file_name` is used in messages.
pub fn parse_env_file(text: &str, file_name: &str) -> Result<Vec<EnvFileLine>, EnvFileErrors> {
    let (lines, errors) = scan(text, file_name);
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(EnvFileErrors(errors))
    }
}

/// The good lines and the bad ones, each in file order.
fn scan(text: &str, file_name: &str) -> (Vec<EnvFileLine>, Vec<EnvFileError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let location = Location {
            line: i + 1,
            col: raw[..raw.len() - line.len()].chars().count() + 1,
        };
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (line, None),
        };
        let kind = if line.contains('\0') {
            Some(EnvFileErrorKind::Nul)
        } else if key.is_empty() {
            Some(EnvFileErrorKind::EmptyName)
        } else if key.chars().any(char::is_whitespace) {
            Some(EnvFileErrorKind::NameHasWhitespace(key.to_owned()))
        } else {
            None
        };
        match kind {
            Some(kind) => errors.push(EnvFileError {
                file: file_name.to_owned(),
                location,
                kind,
            }),
            None => lines.push(EnvFileLine {
                location,
                key: key.to_owned(),
                value: value.map(str::to_owned),
            }),
        }
    }
    (lines, errors)
}

/// Env-file text as `docker run --env-file` applies it: `KEY=VALUE` entries in file order, a bare
/// `KEY` copied from `lookup` (the caller's environment) and left out when unset there.
pub fn env_file_entries(
    text: &str,
    file_name: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, EnvFileErrors> {
    Ok(parse_env_file(text, file_name)?
        .into_iter()
        .filter_map(|l| match l.value {
            Some(v) => Some(format!("{}={v}", l.key)),
            None => lookup(&l.key).map(|v| format!("{}={v}", l.key)),
        })
        .collect())
}

/// An env file's variables under a deployment spec's rules: a bare `KEY` is an error (copy host
/// variables with `{from_host: VAR}`), and names are portable shell names like the spec's `env`
/// keys. Every bad line is reported.
fn spec_env_file(text: &str, file_name: &str) -> Result<Vec<(String, String)>, SpecErrors> {
    let mut sink = Sink::new(Some(file_name));
    let (lines, errors) = scan(text, file_name);
    for e in errors {
        sink.push(Some(e.location), "", e.kind.to_string());
    }
    let mut out = Vec::new();
    for l in lines {
        match l.value {
            None => sink.push(
                Some(l.location),
                "",
                format!("expected KEY=VALUE, found `{}` (copy host variables with `{{from_host: VAR}}` in the spec instead)", l.key),
            ),
            Some(_) if !crate::validate::is_env_name(&l.key) => {
                sink.push(Some(l.location), "", format!("invalid variable name `{}`", l.key));
            }
            Some(v) => out.push((l.key, v)),
        }
    }
    if sink.errors.is_empty() {
        Ok(out)
    } else {
        Err(SpecErrors::sorted(sink.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<String> {
        env_file_entries(text, "my.env", |k| {
            (k == "SET").then(|| "from env".to_owned())
        })
        .unwrap()
    }

    fn errors(text: &str) -> Vec<String> {
        let e = parse_env_file(text, "my.env").unwrap_err();
        e.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn values_are_taken_literally() {
        assert_eq!(
            entries("# comment\n\nA=1\n  B=x \nC=\"quoted\" value\nD=\nE=a=b\nF=$HOME\r\n"),
            [
                "A=1",
                "B=x ",
                "C=\"quoted\" value",
                "D=",
                "E=a=b",
                "F=$HOME"
            ]
        );
    }

    #[test]
    fn a_bare_key_is_copied_from_the_environment_or_left_out() {
        assert_eq!(
            entries("SET\nUNSET\n  SET\nA=1\n"),
            ["SET=from env", "SET=from env", "A=1"]
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        assert_eq!(entries("\u{feff}A=1\n"), ["A=1"]);
    }

    #[test]
    fn names_and_columns_are_kept() {
        let got = parse_env_file("\n\t  K=v\nBARE\n", "my.env").unwrap();
        assert_eq!(
            got,
            [
                EnvFileLine {
                    location: Location { line: 2, col: 4 },
                    key: "K".into(),
                    value: Some("v".into()),
                },
                EnvFileLine {
                    location: Location { line: 3, col: 1 },
                    key: "BARE".into(),
                    value: None,
                },
            ]
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_file_and_line() {
        assert_eq!(
            errors("A=1\nBAD KEY=2\n  =x\nB =1\nC=a\0b\nD\0\nOK\n"),
            [
                "my.env:2:1: variable name `BAD KEY` contains whitespace",
                "my.env:3:3: no variable name before `=`",
                "my.env:4:1: variable name `B ` contains whitespace",
                "my.env:5:1: the line contains a NUL byte",
                "my.env:6:1: the line contains a NUL byte",
            ]
        );
        let e = parse_env_file("=1\n", "my.env").unwrap_err();
        assert_eq!(e.0[0].kind, EnvFileErrorKind::EmptyName);
        assert_eq!(e.0[0].file, "my.env");
    }

    #[test]
    fn the_spec_rejects_bare_keys_and_unportable_names() {
        let got = spec_env_file("# c\n\nA=1\n  B=x\nC=\"q\" v\nD=\n", "app.env").unwrap();
        let want = [("A", "1"), ("B", "x"), ("C", "\"q\" v"), ("D", "")];
        assert_eq!(
            got,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        let err = spec_env_file("A=1\nHOME\n  1X=2\nA B=1\n", "app.env").unwrap_err();
        let lines: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("app.env:2:1: expected KEY=VALUE, found `HOME`"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "app.env:3:3: invalid variable name `1X`");
        assert_eq!(
            lines[2],
            "app.env:4:1: variable name `A B` contains whitespace"
        );
    }
}

impl crate::model::Service {
    /// The container environment of this service: the `env_file`s in order (`files` holds their
    /// contents, same order as `env_file`), then `env` on top, with `{from_host: VAR}` looked up
    /// through `host` (e.g. `|v| std::env::var(v).ok()` in the deploying process). An unset host
    /// variable or a bad env-file line is an error; nothing is silently empty.
    pub fn resolve_env(
        &self,
        files: &[String],
        host: impl Fn(&str) -> Option<String>,
    ) -> Result<std::collections::BTreeMap<String, String>, SpecErrors> {
        let mut env = std::collections::BTreeMap::new();
        let mut errors = Vec::new();
        if files.len() != self.env_file.len() {
            let mut sink = Sink::new(None);
            sink.push(
                None,
                "env_file",
                format!(
                    "{} env files declared but {} contents given",
                    self.env_file.len(),
                    files.len()
                ),
            );
            return Err(SpecErrors(sink.errors));
        }
        for (name, text) in self.env_file.iter().zip(files) {
            match spec_env_file(text, name) {
                Ok(pairs) => env.extend(pairs),
                Err(e) => errors.extend(e.0),
            }
        }
        for (key, value) in &self.env {
            match value {
                crate::model::EnvValue::Literal(v) => {
                    env.insert(key.clone(), v.clone());
                }
                crate::model::EnvValue::FromHost { from_host } => match host(from_host) {
                    Some(v) => {
                        env.insert(key.clone(), v);
                    }
                    None => {
                        let mut sink = Sink::new(None);
                        sink.push(
                            None,
                            &format!("env.{key}"),
                            format!("host variable `{from_host}` (for `{key}`) is not set"),
                        );
                        errors.extend(sink.errors);
                    }
                },
            }
        }
        if errors.is_empty() {
            Ok(env)
        } else {
            Err(SpecErrors(errors))
        }
    }
}

#[cfg(test)]
mod resolve_tests {
    use crate::parse_str;

    #[test]
    fn files_then_env_then_host() {
        let d = parse_str(
            "version: v1\ndeployment: d\nservices:\n  s:\n    image: x\n    env_file: [a.env, b.env]\n    env: {B: from-spec, H: {from_host: MY_VAR}}\n",
            "t.yaml",
        )
        .unwrap();
        let s = &d.services["s"];
        let files = ["A=1\nB=from-a\n".to_owned(), "A=2\n".to_owned()];
        let env = s
            .resolve_env(&files, |v| (v == "MY_VAR").then(|| "host".to_owned()))
            .unwrap();
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("A", "2"), ("B", "from-spec"), ("H", "host")]);

        let err = s
            .resolve_env(&["X\n".to_owned(), String::new()], |_| None)
            .unwrap_err();
        let lines: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("a.env:1:1: expected KEY=VALUE"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[1],
            "env.H: host variable `MY_VAR` (for `H`) is not set"
        );
        assert!(s.resolve_env(&[], |_| None).is_err());
    }
}

//! The `env_file` format, as Docker's `--env-file` reads it: one `KEY=VALUE` per line, `#`
//! comments and blank lines ignored, the value taken literally (no quote removal, no expansion).
//! A bare `KEY` line (Docker: copy from the host) is rejected: host variables must be named
//! explicitly in the spec with `{from_host: VAR}`.

use crate::error::{Location, Sink, SpecErrors};

/// Parses env-file text; `file_name` is used in messages. All bad lines are reported.
pub fn parse_env_file(text: &str, file_name: &str) -> Result<Vec<(String, String)>, SpecErrors> {
    let mut sink = Sink::new(Some(file_name));
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let col = raw.len() - line.len() + 1;
        let loc = Some(Location { line: i + 1, col });
        match line.split_once('=') {
            Some((key, value)) => {
                let key = key.trim_end();
                let valid = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if valid {
                    out.push((key.to_owned(), value.to_owned()));
                } else {
                    sink.push(loc, "", format!("invalid variable name `{key}`"));
                }
            }
            None => sink.push(
                loc,
                "",
                format!("expected KEY=VALUE, found `{}` (copy host variables with `{{from_host: VAR}}` in the spec instead)", line.trim_end()),
            ),
        }
    }
    if sink.errors.is_empty() {
        Ok(out)
    } else {
        Err(SpecErrors(sink.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_literally() {
        let got = parse_env_file(
            "# comment\n\nA=1\n  B = x\nC=\"quoted\" value\nD=\nE=a=b\n",
            "app.env",
        )
        .unwrap();
        let want = [
            ("A", "1"),
            ("B", " x"),
            ("C", "\"quoted\" value"),
            ("D", ""),
            ("E", "a=b"),
        ];
        assert_eq!(
            got,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn reports_every_bad_line() {
        let err = parse_env_file("A=1\nHOME\n  1X=2\n", "app.env").unwrap_err();
        let lines: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("app.env:2:1: expected KEY=VALUE, found `HOME`"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "app.env:3:3: invalid variable name `1X`");
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
            match parse_env_file(text, name) {
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

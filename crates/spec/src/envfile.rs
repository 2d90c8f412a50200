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

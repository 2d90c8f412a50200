//! Errors that point at the place in the spec file that caused them.
//!
//! Every problem found while reading a spec (YAML syntax, wrong type, unknown field, failed
//! validation) becomes one [`SpecError`]. They are collected, not returned one at a time, so a user
//! fixes a file in one round instead of one error per run.

use std::fmt;

/// A 1-based line and column in the spec file (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One problem in a deployment spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file name as given by the caller (e.g. `demo.yaml`), if the spec came from a file.
    pub file: Option<String>,
    /// Where in the file; `None` when the spec did not come from YAML (e.g. JSON over the API).
    pub location: Option<Location>,
    /// The dotted path of the offending element, e.g. `services.web.endpoints[0].port`.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.location) {
            (Some(file), Some(loc)) => write!(f, "{file}:{loc}: {}", self.message),
            (None, Some(loc)) => write!(f, "{loc}: {}", self.message),
            (Some(file), None) if self.path.is_empty() => write!(f, "{file}: {}", self.message),
            (Some(file), None) => write!(f, "{file}: {}: {}", self.path, self.message),
            (None, None) if self.path.is_empty() => write!(f, "{}", self.message),
            (None, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for SpecError {}

/// All problems found in one spec, sorted by position. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no errors (never the case for a returned `Err`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sort by location (errors without a location keep their order at the end) and drop exact
    /// duplicates, so output is stable and readable.
    pub(crate) fn sorted(mut errors: Vec<SpecError>) -> SpecErrors {
        errors.sort_by_key(|e| {
            e.location
                .map_or((usize::MAX, usize::MAX), |l| (l.line, l.col))
        });
        errors.dedup();
        SpecErrors(errors)
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.0)
    }
}

/// One problem a line: how every list of errors in this crate reads.
pub(crate) fn write_lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

impl std::error::Error for SpecErrors {}

/// Collects errors with the file name and turns spec paths into human wording.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub file: Option<String>,
    pub errors: Vec<SpecError>,
}

impl Sink {
    pub fn new(file: Option<&str>) -> Sink {
        Sink {
            file: file.map(str::to_owned),
            errors: Vec::new(),
        }
    }

    pub fn push(&mut self, location: Option<Location>, path: &str, message: String) {
        self.errors.push(SpecError {
            file: self.file.clone(),
            location,
            path: path.to_owned(),
            message,
        });
    }
}

/// Describes a spec path for messages: `services.web.health` becomes `service "web" (health)`.
pub(crate) fn describe(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("services.") {
        let (name, sub) = match rest.find(['.', '[']) {
            Some(i) => (&rest[..i], rest[i..].trim_start_matches('.')),
            None => (rest, ""),
        };
        if sub.is_empty() {
            format!("service \"{name}\"")
        } else {
            format!("service \"{name}\" ({sub})")
        }
    } else if path.is_empty() {
        "the deployment".to_owned()
    } else {
        format!("`{path}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_paths() {
        assert_eq!(describe(""), "the deployment");
        assert_eq!(describe("services.web"), "service \"web\"");
        assert_eq!(
            describe("services.web.health.check"),
            "service \"web\" (health.check)"
        );
        assert_eq!(
            describe("services.web.endpoints[1]"),
            "service \"web\" (endpoints[1])"
        );
        assert_eq!(describe("services"), "`services`");
    }

    #[test]
    fn display_with_and_without_location() {
        let e = SpecError {
            file: Some("demo.yaml".into()),
            location: Some(Location { line: 12, col: 7 }),
            path: "services.web".into(),
            message: "boom".into(),
        };
        assert_eq!(e.to_string(), "demo.yaml:12:7: boom");
        let e = SpecError {
            file: None,
            location: None,
            ..e
        };
        assert_eq!(e.to_string(), "services.web: boom");
    }
}

//! Platforms (`os/arch[/variant]`) and choosing one entry of an image index.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::RegistryError;

/// An image platform in the Go `GOOS/GOARCH[/variant]` vocabulary that registries use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine we run on, so a plain `pull` gets images that can run here.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Self {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]` as given to `pull --platform`.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidPlatform {
            platform: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.trim().split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("expected os/arch or os/arch/variant"));
        }
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if let Some(p) = parts.iter().find(|p| !valid(p)) {
            return Err(bad(&format!(
                "component {p:?} must be non-empty lowercase letters and digits"
            )));
        }
        Ok(Self {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry for `candidate` can serve a request for `self`.
    /// A request without variant accepts any variant; `arm64` treats a missing variant as `v8`
    /// (the only one there is in practice), as docker does.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        match &self.variant {
            None => true,
            Some(want) => {
                let default = if self.architecture == "arm64" {
                    Some("v8")
                } else {
                    None
                };
                let have = candidate.variant.as_deref().or(default);
                have == Some(want.as_str())
            }
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Picks the best entry for `want` among `(index position, platform)` pairs: an exact variant
/// match first, then the first compatible one. Entries without a platform never match.
pub(crate) fn select<'a>(
    want: &Platform,
    entries: impl Iterator<Item = (usize, Option<&'a Platform>)>,
) -> Option<usize> {
    let mut first_compatible = None;
    for (i, p) in entries {
        let Some(p) = p else { continue };
        if !want.matches(p) {
            continue;
        }
        if want.variant.is_none() || p.variant == want.variant {
            // Without a wanted variant the first listed compatible entry is as good as any.
            return Some(i);
        }
        first_compatible.get_or_insert(i);
    }
    first_compatible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.os, "linux");
        assert_eq!(p.architecture, "arm");
        assert_eq!(p.variant.as_deref(), Some("v7"));
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "Linux/amd64",
            "",
        ] {
            let err = Platform::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn host_is_linux_on_this_machine() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.is_empty());
    }

    #[test]
    fn selection_prefers_exact_variant() {
        let ps = [
            Platform::parse("linux/amd64").unwrap(),
            Platform::parse("linux/arm/v6").unwrap(),
            Platform::parse("linux/arm/v7").unwrap(),
            Platform::parse("linux/arm64").unwrap(),
        ];
        let entries = || ps.iter().enumerate().map(|(i, p)| (i, Some(p)));
        let pick = |s: &str| select(&Platform::parse(s).unwrap(), entries());
        assert_eq!(pick("linux/amd64"), Some(0));
        assert_eq!(pick("linux/arm/v7"), Some(2));
        assert_eq!(pick("linux/arm"), Some(1));
        assert_eq!(pick("linux/arm64/v8"), Some(3));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("windows/amd64"), None);
        assert_eq!(select(&Platform::host(), [(0, None)].into_iter()), None);
    }
}

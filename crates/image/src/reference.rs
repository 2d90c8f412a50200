//! Image references, normalised the way docker does (`busybox` is
//! `docker.io/library/busybox:latest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A fully-qualified image reference: registry, repository, and a tag and/or a digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference. Each variant names the offending part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid reference {reference:?}: repository name must be lowercase")]
    Uppercase { reference: String },
    #[error("invalid reference {reference:?}: bad path component {component:?} (allowed: a-z, 0-9, separated by '.', '_', '__' or '-')")]
    BadComponent {
        reference: String,
        component: String,
    },
    #[error("invalid reference {reference:?}: bad tag {tag:?} (allowed: 1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)")]
    BadTag { reference: String, tag: String },
    #[error("invalid reference {reference:?}: bad registry {registry:?}")]
    BadRegistry { reference: String, registry: String },
    #[error("invalid reference {reference:?}: registry {registry:?} has port {port:?}, which is not a number from 1 to 65535")]
    BadPort {
        reference: String,
        registry: String,
        port: String,
    },
    #[error("invalid reference {reference:?}: repository name longer than 255 characters")]
    TooLong { reference: String },
    #[error("invalid reference {reference:?}: {source}")]
    BadDigest {
        reference: String,
        #[source]
        source: DigestError,
    },
}

impl Reference {
    /// Parses and normalises `[registry/]repo[:tag][@sha256:…]`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|source| ReferenceError::BadDigest {
                    reference: input.to_string(),
                    source,
                })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        // A tag is whatever follows the last ':' after the last '/', so that
        // `host:5000/repo` keeps its port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (
                    &name_and_tag[..at],
                    Some(name_and_tag[at + 1..].to_string()),
                )
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::BadTag {
                    reference: input.to_string(),
                    tag: tag.clone(),
                });
            }
        }
        let (registry, repository) = split_registry(name);
        let registry = match registry {
            Some(r) if r == "index.docker.io" || r == "registry-1.docker.io" => {
                DEFAULT_REGISTRY.to_string()
            }
            Some(r) => {
                if !valid_registry(r) {
                    return Err(ReferenceError::BadRegistry {
                        reference: input.to_string(),
                        registry: r.to_string(),
                    });
                }
                if let Some(port) = registry_port(r) {
                    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
                        return Err(ReferenceError::BadPort {
                            reference: input.to_string(),
                            registry: r.to_string(),
                            port: port.to_string(),
                        });
                    }
                }
                r.to_string()
            }
            None => DEFAULT_REGISTRY.to_string(),
        };
        let mut repository = repository.to_string();
        if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.len() > 255 {
            return Err(ReferenceError::TooLong {
                reference: input.to_string(),
            });
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                reference: input.to_string(),
            });
        }
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::BadComponent {
                    reference: input.to_string(),
                    component: component.to_string(),
                });
            }
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest` (tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The shortest form docker would print (`busybox:latest`, `127.0.0.1:5000/a/b:t`).
    /// `library/` is dropped only when one path component remains: `library/a/b` must keep
    /// it, since `a/b` names `docker.io/a/b`. `docker.io/` stays when the path's first
    /// component would read as a registry (`docker.io/x.io/y`). Both found by the `reference`
    /// fuzz target: the short form must name the same image.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DEFAULT_REGISTRY {
            let short = match self.repository.strip_prefix("library/") {
                Some(official) if !official.contains('/') => official,
                _ => self.repository.as_str(),
            };
            match split_registry(short) {
                (None, _) => short.to_string(),
                (Some(_), _) => self.name(),
            }
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// True for registries that are reached over plain HTTP by default: loopback ones, as docker does.
    pub fn is_loopback_registry(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }
}

/// Splits off a leading registry component: it is one if it has a `.` or `:`, or is `localhost`.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// The port part of `host:port` / `[v6]:port`, if the registry names one (an IPv6 literal's
/// own colons are not a port separator).
fn registry_port(r: &str) -> Option<&str> {
    let after_host = match r.rfind(']') {
        Some(i) => &r[i + 1..],
        None => r,
    };
    after_host.rsplit_once(':').map(|(_, port)| port)
}

fn valid_registry(r: &str) -> bool {
    !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+ (sep [a-z0-9]+)*` with sep one of `.`, `_`, `__`, or a run of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        let deep = Reference::parse("library/a/lpine").unwrap();
        assert_eq!(deep.familiar(), "library/a/lpine:latest");
        assert_eq!(Reference::parse(&deep.familiar()).unwrap(), deep);
        let hostlike = Reference::parse("docker.io/lyb.io/x").unwrap();
        assert_eq!(hostlike.familiar(), "docker.io/lyb.io/x:latest");
        assert_eq!(Reference::parse(&hostlike.familiar()).unwrap(), hostlike);
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(
            norm("quay.io/org/img:v1.2-rc_3"),
            "quay.io/org/img:v1.2-rc_3"
        );
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.tag_or_digest(), d);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        let r = Reference::parse(&format!("h:5000/busybox:t@{d}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.tag_or_digest(), d);
        assert!(matches!(
            Reference::parse("busybox@sha256:zz"),
            Err(ReferenceError::BadDigest { .. })
        ));
    }

    #[test]
    fn rejects_bad_references() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        for bad in [
            "127.0.0.1:99999/x",
            "localhost:0/x",
            "host.io:/x",
            "host.io:5o00/x",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert!(
                matches!(err, ReferenceError::BadPort { .. }),
                "{bad}: {err:?}"
            );
            assert!(
                err.to_string().contains("not a number from 1 to 65535"),
                "{err}"
            );
        }
        assert!(Reference::parse("127.0.0.1:65535/x").is_ok());
        assert!(Reference::parse("[::1]:5000/x").is_ok());
        assert!(matches!(
            Reference::parse("BusyBox"),
            Err(ReferenceError::Uppercase { .. })
        ));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ReferenceError::BadComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("a/-b"),
            Err(ReferenceError::BadComponent { .. })
        ));
        assert!(matches!(
            Reference::parse("busybox:-x"),
            Err(ReferenceError::BadTag { .. })
        ));
        assert!(matches!(
            Reference::parse("busybox:"),
            Err(ReferenceError::BadTag { .. })
        ));
    }

    #[test]
    fn familiar_and_loopback() {
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        let r = Reference::parse("127.0.0.1:5000/a:t").unwrap();
        assert_eq!(r.familiar(), "127.0.0.1:5000/a:t");
        assert!(r.is_loopback_registry());
        assert!(Reference::parse("localhost:1/a")
            .unwrap()
            .is_loopback_registry());
        assert!(!Reference::parse("quay.io/a")
            .unwrap()
            .is_loopback_registry());
        assert!(!Reference::parse("busybox").unwrap().is_loopback_registry());
    }
}

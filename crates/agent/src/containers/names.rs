//! Container ids (64 hex digits, like docker's) and generated names.

use crate::error::{AgentError, Result};

/// A fresh random container id.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| AgentError::internal(format!("reading random bytes for an id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "amber", "brisk", "calm", "dapper", "eager", "fuzzy", "gentle", "hardy", "jolly", "keen",
    "lively", "mellow", "nimble", "placid", "quiet", "rapid", "steady", "tidy", "upbeat", "vivid",
    "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "badger", "heron", "lynx", "marten", "newt", "osprey", "puffin", "quail",
    "raven", "stoat", "tern", "vole", "wren", "yak", "zebu", "ibis", "gecko", "bison", "crane",
    "dingo",
];

/// A readable name derived from an id (`brisk_heron`); the caller appends a suffix on conflict.
pub fn generated_name(id: &str) -> String {
    let n = u64::from_str_radix(&id[..id.len().min(12)], 16).unwrap_or(0);
    let a = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let b = NOUNS[((n / ADJECTIVES.len() as u64) % NOUNS.len() as u64) as usize];
    format!("{a}_{b}")
}

/// Docker's naming rule shared by containers and volumes: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, between
/// `min_len` and 128 characters.
pub(crate) fn is_docker_name(name: &str, min_len: usize) -> bool {
    let b = name.as_bytes();
    b.len() >= min_len.max(1)
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Checks a user-given name: docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 chars.
pub fn validate_name(name: &str) -> Result<()> {
    if is_docker_name(name, 1) {
        Ok(())
    } else {
        Err(AgentError::invalid(format!(
            "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed (at most 128)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn names() {
        assert!(validate_name("web-1.a_b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        let n = generated_name(&"0".repeat(64));
        assert!(validate_name(&n).is_ok());
    }
}

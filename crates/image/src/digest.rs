//! Content digests (`sha256:<hex>`), the names of everything in the content store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A content digest. Only sha256 is accepted: it is what every registry and the OCI image
/// spec require, and supporting one algorithm keeps store paths unambiguous.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Malformed(String),
    #[error("unsupported digest algorithm {algorithm:?} in {digest:?}: only sha256 is supported")]
    UnsupportedAlgorithm { algorithm: String, digest: String },
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                algorithm: algorithm.to_string(),
                digest: s.to_string(),
            });
        }
        Self::from_hex(hex).map_err(|_| DigestError::Malformed(s.to_string()))
    }

    /// Builds a sha256 digest from its 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(DigestError::Malformed(hex.to_string()));
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    /// The digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(data).into())
    }

    /// Wraps a finished sha256 state.
    pub fn from_sha256(bytes: [u8; 32]) -> Self {
        Self {
            hex: hex::encode(bytes),
        }
    }

    /// The algorithm, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as docker shows ids.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The chain ids of a layer stack (OCI image spec): `chain[0] = diff[0]`,
/// `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of_bytes(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A writer-side sha256 accumulator that also counts bytes, for verifying streams.
#[derive(Default, Clone)]
pub struct DigestHasher {
    state: Sha256,
    len: u64,
}

impl DigestHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.state.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest::from_sha256(self.state.finalize().into())
    }
}

/// In the API's OpenAPI document a digest is a string of the one form [`Digest::parse`] accepts.
impl utoipa::PartialSchema for Digest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^sha256:[0-9a-f]{64}$"))
            .description(Some(
                "A content digest: `sha256:` and 64 lowercase hex digits.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Digest {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            Digest::parse("sha256:abc"),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Digest::parse("abc"),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Digest::parse(&format!("sha512:{}", "a".repeat(128))),
            Err(DigestError::UnsupportedAlgorithm { .. })
        ));
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
    }

    #[test]
    fn hasher_matches_one_shot() {
        let mut h = DigestHasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of_bytes(b"hello world"));
    }
}

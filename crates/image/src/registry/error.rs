//! What can go wrong talking to a registry, and the kind of each failure.
//!
//! Callers (the agent's API, the CLI) decide what to answer from [`RegistryErrorKind`], never
//! from the wording of a message: a registry's 404 stays "not found" however it is phrased.

use std::path::PathBuf;
use std::time::Duration;

use super::http::HttpError;
use crate::digest::Digest;
use crate::reference::Reference;

/// What kind of failure a [`RegistryError`] is, for callers that must react to it (map it to
/// an API status, decide whether to retry) without reading its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryErrorKind {
    /// The repository, tag, manifest or blob does not exist there (404, `MANIFEST_UNKNOWN`, ...).
    NotFound,
    /// No credentials, or rejected ones (401, `UNAUTHORIZED`, `DENIED`).
    Unauthorized,
    /// The registry forbids the request (403 without an error code it explained).
    Denied,
    /// A document or blob larger than allowed, declared or received.
    TooLarge,
    /// The registry stalled: no headers or body for the progress timeout, or a document not
    /// whole within the document timeout.
    Timeout,
    /// The registry could not be reached: name resolution, connect, TLS, sending the request.
    Unreachable,
    /// A transfer broke after it started (a dropped connection mid-body).
    Network,
    /// The request itself is wrong: a malformed platform, or no image for the platform.
    InvalidRequest,
    /// The registry answered with something malformed: a bad manifest or token response, a
    /// digest that does not match.
    InvalidResponse,
    /// Any other answer of the registry (5xx, 429, unexpected statuses).
    Server,
    /// Local configuration could not be read (the docker config file).
    Config,
}

/// Everything that can go wrong talking to a registry. Each names the image and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform { platform: String, reason: String },
    #[error("cannot read docker config {path}: {reason}")]
    DockerConfig { path: PathBuf, reason: String },
    #[error("{reference}: no image for platform {wanted} in the index (available: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },
    #[error("{reference}: invalid manifest {digest}: {reason}")]
    BadManifest {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error("{reference}: manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigestMismatch {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{reference}: not found in registry {registry} ({detail})")]
    NotFound {
        reference: String,
        registry: String,
        detail: String,
    },
    #[error("{reference}: registry {registry} refused access ({}): {detail}", if *had_credentials { "credentials were rejected" } else { "no credentials configured for it" })]
    Unauthorized {
        reference: String,
        registry: String,
        had_credentials: bool,
        detail: String,
    },
    #[error("{reference}: registry {registry}: {source}")]
    Http {
        reference: String,
        registry: String,
        #[source]
        source: Box<HttpError>,
    },
    #[error("{last} (gave up {what} after {attempts} attempts: the retry budget of {budget_secs} s is spent, registry setting retry_budget_secs)")]
    RetryBudgetSpent {
        what: String,
        attempts: u32,
        budget_secs: u64,
        last: Box<RegistryError>,
    },
    #[error("{reference}: reading blob {digest} from registry {registry} failed: {source}")]
    BlobStream {
        reference: String,
        registry: String,
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Whether trying again may help: server errors (5xx, 429), timeouts and dropped
    /// connections; never auth failures, unknown names or bad content.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Http { source, .. } => source.is_transient(),
            RegistryError::BlobStream { .. } => true,
            _ => false,
        }
    }

    /// The kind of this failure; a spent retry budget has the kind of its last attempt.
    pub fn kind(&self) -> RegistryErrorKind {
        match self {
            RegistryError::InvalidPlatform { .. } | RegistryError::NoMatchingPlatform { .. } => {
                RegistryErrorKind::InvalidRequest
            }
            RegistryError::DockerConfig { .. } => RegistryErrorKind::Config,
            RegistryError::BadManifest { .. } | RegistryError::ManifestDigestMismatch { .. } => {
                RegistryErrorKind::InvalidResponse
            }
            RegistryError::NotFound { .. } => RegistryErrorKind::NotFound,
            RegistryError::Unauthorized { .. } => RegistryErrorKind::Unauthorized,
            RegistryError::Http { source, .. } => source.kind(),
            RegistryError::RetryBudgetSpent { last, .. } => last.kind(),
            RegistryError::BlobStream { source, .. } => match source.kind() {
                std::io::ErrorKind::TimedOut => RegistryErrorKind::Timeout,
                _ => RegistryErrorKind::Network,
            },
        }
    }

    /// Names the failure of an HTTP exchange for `reference`: unknown names and refused
    /// access get their own variants (from the status or the registry's error codes).
    pub(crate) fn from_http(
        reference: &Reference,
        had_credentials: bool,
        source: HttpError,
    ) -> RegistryError {
        let registry = reference.registry().to_string();
        match &source {
            HttpError::Status { status, codes, .. }
                if *status == 404
                    || codes.iter().any(|c| {
                        matches!(
                            c.as_str(),
                            "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN" | "NOT_FOUND"
                        )
                    }) =>
            {
                RegistryError::NotFound {
                    reference: reference.to_string(),
                    registry,
                    detail: source.to_string(),
                }
            }
            HttpError::Status { status, codes, .. }
                if *status == 401
                    || codes
                        .iter()
                        .any(|c| matches!(c.as_str(), "UNAUTHORIZED" | "DENIED")) =>
            {
                RegistryError::Unauthorized {
                    reference: reference.to_string(),
                    registry,
                    had_credentials,
                    detail: source.to_string(),
                }
            }
            _ => RegistryError::Http {
                reference: reference.to_string(),
                registry,
                source: Box::new(source),
            },
        }
    }
}

/// The time one operation (a request with its retries, a blob download with its resumes) may
/// lose to failures before giving up: [`super::RegistryConfig::retry_budget_secs`].
pub struct RetryBudget {
    budget: Duration,
    spent: Duration,
}

impl RetryBudget {
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            spent: Duration::ZERO,
        }
    }

    /// Counts `lost` (a failed attempt's time without progress, plus the backoff before the
    /// next); false when that exceeds the budget.
    pub fn spend(&mut self, lost: Duration) -> bool {
        self.spent += lost;
        self.spent <= self.budget
    }

    /// The error for giving up on `what` after `attempts` attempts, the last failing with `last`.
    pub fn spent_error(&self, what: &str, attempts: u32, last: RegistryError) -> RegistryError {
        RegistryError::RetryBudgetSpent {
            what: what.to_string(),
            attempts,
            budget_secs: self.budget.as_secs(),
            last: Box::new(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, codes: &[&str], detail: &str) -> HttpError {
        HttpError::Status {
            url: "http://127.0.0.1:5000/v2/x/manifests/latest".into(),
            status,
            codes: codes.iter().map(|c| c.to_string()).collect(),
            detail: detail.into(),
        }
    }

    fn classify(e: HttpError) -> RegistryErrorKind {
        let r = Reference::parse("127.0.0.1:5000/x:latest").unwrap();
        RegistryError::from_http(&r, false, e).kind()
    }

    #[test]
    fn the_kind_follows_status_and_codes_not_wording() {
        // However the registry words it, a 404 is not found and a 500 is a server error.
        assert_eq!(
            classify(status(404, &[], "nothing here")),
            RegistryErrorKind::NotFound
        );
        assert_eq!(
            classify(status(404, &[], "boom: internal")),
            RegistryErrorKind::NotFound
        );
        assert_eq!(
            classify(status(500, &[], "manifest not found")),
            RegistryErrorKind::Server
        );
        assert_eq!(
            classify(status(400, &["MANIFEST_UNKNOWN"], "x")),
            RegistryErrorKind::NotFound
        );
        assert_eq!(
            classify(status(401, &[], "not found")),
            RegistryErrorKind::Unauthorized
        );
        assert_eq!(
            classify(status(403, &["DENIED"], "")),
            RegistryErrorKind::Unauthorized
        );
        assert_eq!(classify(status(403, &[], "")), RegistryErrorKind::Denied);
        assert_eq!(classify(status(429, &[], "")), RegistryErrorKind::Server);
    }

    #[test]
    fn limits_and_stalls_have_their_kinds() {
        let url = "http://127.0.0.1:5000/v2/x/blobs/y".to_string();
        assert_eq!(
            classify(HttpError::TooLarge {
                url: url.clone(),
                what: "manifest",
                limit: 1
            }),
            RegistryErrorKind::TooLarge
        );
        assert_eq!(
            classify(HttpError::ProgressTimeout {
                url,
                which: "no body data",
                secs: 1
            }),
            RegistryErrorKind::Timeout
        );
    }

    #[test]
    fn a_spent_retry_budget_keeps_the_kind_of_its_last_attempt() {
        let last = RegistryError::BlobStream {
            reference: "x".into(),
            registry: "r".into(),
            digest: Digest::of_bytes(b"x"),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no data for 1 s"),
        };
        let spent = RetryBudget::new(Duration::ZERO).spent_error("fetching blob", 3, last);
        assert_eq!(spent.kind(), RegistryErrorKind::Timeout);
    }
}

//! Errors of agent operations, classified so every front end can map them (HTTP status codes,
//! CLI exit codes) without parsing messages.

use std::fmt;

/// What went wrong, in the terms a client can act on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The named thing (image, container, service) does not exist.
    NotFound,
    /// The request is malformed or names impossible options.
    InvalidInput,
    /// The request conflicts with the current state (name taken, image in use).
    Conflict,
    /// Anything else: I/O failures, a registry that misbehaves, a bug.
    Internal,
}

/// A boxed cause, as [`std::error::Error::source`] hands it out.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with a kind and a message that says what was wrong and where.
#[derive(Debug)]
pub struct AgentError {
    pub kind: ErrorKind,
    pub message: String,
    /// For failures to start a container: the status docker's CLI would exit with
    /// (125 the engine failed, 126 not executable, 127 command not found).
    pub exit_code: Option<i32>,
    /// The lower crate's error this one was made from, for logs and callers that look at
    /// the cause; front ends map [`AgentError::kind`], never the source.
    source: Option<Cause>,
}

impl AgentError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            exit_code: None,
            source: None,
        }
    }
    /// The same error, keeping `cause` as its [`std::error::Error::source`].
    pub fn with_source(mut self, cause: impl Into<Cause>) -> Self {
        self.source = Some(cause.into());
        self
    }
    /// The same error, carrying a CLI exit status.
    pub fn with_exit_code(mut self, code: Option<i32>) -> Self {
        self.exit_code = code;
        self
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<anyhow::Error> for AgentError {
    /// Keeps the whole cause chain in the message: "pulling x: fetching layer y: connection reset".
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}")).with_source(e)
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        Self::internal(e.to_string()).with_source(e)
    }
}

/// "a: b: c" from an error and its sources, skipping a cause its parent's message already
/// quotes: the agent's one way to turn a lower crate's error into a message. The runtime
/// crate's helper, so that the shim and the agent spell chains the same way.
pub use zlayer_runtime::error_chain;

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[derive(Debug, thiserror::Error)]
    #[error("fetching layer {layer}")]
    struct Fetch {
        layer: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("pulling busybox: {0}")]
    struct Pull(#[source] Fetch);

    #[test]
    fn chain_joins_sources_once() {
        let e = Pull(Fetch {
            layer: "sha256:ab",
            source: std::io::Error::other("connection reset"),
        });
        // The outer message repeats its cause's: it is not added twice.
        assert_eq!(
            error_chain(&e),
            "pulling busybox: fetching layer sha256:ab: connection reset"
        );
    }

    #[test]
    fn agent_error_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = AgentError::from(io);
        assert_eq!(e.kind, ErrorKind::Internal);
        let source = e.source().expect("the io error is the source");
        assert_eq!(source.to_string(), "no such file");
        assert!(AgentError::conflict("x").source().is_none());
        let wrapped = AgentError::invalid("bad layer").with_source(e);
        assert_eq!(error_chain(&wrapped), "bad layer: no such file");
    }
}

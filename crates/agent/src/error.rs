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

/// An error with a kind and a message that says what was wrong and where.
#[derive(Debug)]
pub struct AgentError {
    pub kind: ErrorKind,
    pub message: String,
    /// For failures to start a container: the status docker's CLI would exit with
    /// (125 the engine failed, 126 not executable, 127 command not found).
    pub exit_code: Option<i32>,
}

impl AgentError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            exit_code: None,
        }
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

impl std::error::Error for AgentError {}

impl From<anyhow::Error> for AgentError {
    /// Keeps the whole cause chain in the message: "pulling x: fetching layer y: connection reset".
    fn from(e: anyhow::Error) -> Self {
        Self::internal(format!("{e:#}"))
    }
}

impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        Self::internal(e.to_string())
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

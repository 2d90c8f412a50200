//! Request and response bodies shared by server and client.

use serde::{Deserialize, Serialize};

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: String,
    pub root: String,
    pub state: String,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub kind: zlayer_agent::ErrorKind,
    /// For failures to start a container: the status the CLI exits with (125/126/127).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// The API version spoken by this build: the path prefix of every route.
pub const API_VERSION: &str = "v1";

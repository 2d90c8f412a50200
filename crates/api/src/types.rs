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
}

/// The API version spoken by this build: the path prefix of every route.
pub const API_VERSION: &str = "v1";

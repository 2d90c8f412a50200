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
/// The largest JSON request body the API accepts (axum's default, stated here so the server's
/// 413 answer and the client's own check before sending can both name it).
pub const MAX_JSON_BODY: usize = 2 << 20;

/// The error message for a JSON body over [`MAX_JSON_BODY`].
pub fn body_too_large(len: Option<usize>) -> String {
    let size = len.map(|n| format!(" ({n} bytes)")).unwrap_or_default();
    format!(
        "the request body{size} is larger than the {MAX_JSON_BODY} bytes (2 MiB) the API accepts"
    )
}

pub const API_VERSION: &str = "v1";

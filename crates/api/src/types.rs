//! Request and response bodies shared by server and client.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version: String,
    pub api_version: String,
    pub root: String,
    pub state: String,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

/// Answer of `POST /v1/containers/{id}/stop`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoppedResponse {
    /// The container as named in the request.
    pub stopped: String,
}

/// Answer of `POST /v1/containers/{id}/kill`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KilledResponse {
    /// The container as named in the request.
    pub killed: String,
}

/// Answer of the `DELETE`s of containers, volumes and networks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RemovedResponse {
    /// What was removed, as named in the request.
    pub removed: String,
}

/// Answer of `POST /v1/images/unpack`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnpackResponse {
    /// The directory the root filesystem was written to.
    pub dir: String,
}

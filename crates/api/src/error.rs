//! Mapping of agent errors onto HTTP responses.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use zlayer_agent::{AgentError, ErrorKind};

use crate::types::ErrorBody;

/// An agent error on its way out as an HTTP response.
pub struct ApiError(pub AgentError);

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        Self(e)
    }
}

/// The HTTP status for each kind of error.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The kind for an HTTP status, for the client side.
pub fn kind_for(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::InvalidInput,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_for(self.0.kind);
        if status.is_server_error() {
            tracing::warn!(error = %self.0.message, "request failed");
        }
        (
            status,
            Json(ErrorBody {
                error: self.0.message,
                kind: self.0.kind,
                exit_code: self.0.exit_code,
            }),
        )
            .into_response()
    }
}

/// The kind reported for an error status that did not come from the agent (axum's own
/// rejections: no such route, wrong method, a body too large, not JSON, a query that does not
/// parse).
fn kind_for_rejection(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        s if s.is_client_error() => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    }
}

/// Middleware giving every error response the JSON [`ErrorBody`] the OpenAPI document
/// promises: axum's extractor rejections (400/413/415/422, plain text) and its empty 404/405
/// are rewritten with their text as the message; the agent's own errors are JSON already.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // Rejection texts are one line; a longer body is cut rather than buffered without bound.
    const MAX_MESSAGE: usize = 16 * 1024;
    let text = match axum::body::to_bytes(response.into_body(), MAX_MESSAGE).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    (
        status,
        Json(ErrorBody {
            error,
            kind: kind_for_rejection(status),
            exit_code: None,
        }),
    )
        .into_response()
}

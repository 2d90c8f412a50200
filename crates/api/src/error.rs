//! Mapping of agent errors onto HTTP responses.

use axum::http::StatusCode;
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

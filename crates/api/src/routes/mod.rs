//! Route handlers, one module per resource.

pub mod containers;
pub mod images;
pub mod networks;
pub mod services;
pub mod volumes;

use std::sync::Arc;

use zlayer_agent::{Agent, AgentError};

use crate::error::ApiError;

/// Shared state of every handler.
pub type AppState = Arc<Agent>;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking agent work off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(AgentError::internal(format!("request task failed: {e}"))))?
        .map_err(ApiError)
}

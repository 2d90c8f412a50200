//! Route handlers, one module per resource.

pub mod archive;
pub mod containers;
pub mod images;
pub mod networks;
pub mod pause;
pub mod port;
pub mod rename;
pub mod services;
pub mod top;
pub mod volumes;

use std::sync::Arc;

use zlayer_agent::Agent;

use crate::error::ApiError;

/// Shared state of every handler.
pub type AppState = Arc<Agent>;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

//! zlayer-api: the agent's REST API. The server maps HTTP onto [`zlayer_agent::Agent`] calls;
//! the client is what the CLI (and tests) use. JSON bodies everywhere; long operations (pull,
//! logs -f, events) stream JSON lines.

pub mod capped_listener;
pub mod client;
pub mod error;
pub mod frames;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod types;

pub use client::Client;

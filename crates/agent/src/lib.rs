//! zlayer-agent (library): the node agent. Every operation the CLI offers is a method here
//! first; the REST API is a thin translation of HTTP onto these calls, so other front ends (the
//! Docker Engine API, the Kubernetes CRI) can be added without touching the logic.

pub mod chunk_io;
pub mod config;
pub mod containers;
pub mod db;
pub mod error;
pub mod image_filter;
pub mod images;
pub mod limits;
pub mod network;
pub mod paths;
pub mod services;
pub mod volumes;

mod agent;
mod offload;

pub use agent::Agent;
pub use config::AgentConfig;
pub use error::{error_chain, AgentError, ErrorKind};
pub use paths::Paths;

//! Services: deployments declared in YAML (zlayer-spec) kept running on this node.
//!
//! - [`store`]: desired state and supervision facts in `agent.db`;
//! - [`labels`]: how containers are tied to their deployment/service/replica;
//! - [`converge`]: the pure reconcile rules for `kind: service`;
//! - [`backoff`], [`health`]: restart backoff and health-check state machines and probes;
//! - [`events`]: the in-memory event stream;
//! - [`publish`]: services' published ports, forwarded to their healthy replicas.

pub mod backoff;
pub mod cancel;
pub mod converge;
pub mod deploy;
pub mod events;
pub mod health;
pub mod labels;
pub mod metrics;
pub mod publish;
pub mod store;
pub mod supervisor;

pub use deploy::{DeployRequest, DeployResponse, ServiceInfo};
pub use health::HealthStatus;
pub use publish::PublishLimits;
pub use supervisor::Services;

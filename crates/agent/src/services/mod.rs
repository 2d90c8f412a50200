//! Services: deployments declared in YAML (zlayer-spec) kept running on this node.
//!
//! - [`store`]: desired state and supervision facts in `agent.db`;
//! - [`key`], [`state`]: which service ([`ServiceKey`]) and the states the supervisor tracks;
//! - [`labels`]: how containers are tied to their deployment/service/replica;
//! - [`converge`], [`job_rules`]: the pure rules for `kind: service` and `kind: job`;
//! - [`backoff`], [`health`]: restart backoff and health-check state machines and probes;
//! - [`events`]: the in-memory event stream;
//! - [`publish`]: services' published ports, forwarded to their healthy replicas;
//! - [`deploy`]: `deploy`, `undeploy`, `scale` and their checks.
//!
//! The supervisor: [`supervisor`] (the manager loop: one task per declared service, orphan
//! removal, the `services` list), `task` (one service task and its bookkeeping), `pass/`
//! (one pass per kind: service, job, cron), `request` (spec to container request), `gate`
//! (dependencies and init steps), `probe` (health probe tasks), `endpoints` (DNS names and
//! published ports of a service).

pub mod backoff;
pub mod cancel;
pub mod converge;
pub mod deploy;
mod endpoints;
pub mod events;
mod gate;
pub mod health;
pub mod job_rules;
pub mod key;
pub mod labels;
pub mod metrics;
mod pass;
mod probe;
pub mod publish;
mod request;
pub mod state;
pub mod store;
pub mod supervisor;
mod task;

pub use deploy::{DeployRequest, DeployResponse, ServiceInfo};
pub use health::HealthStatus;
pub use key::ServiceKey;
pub use publish::PublishLimits;
pub use supervisor::Services;

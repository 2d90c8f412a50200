//! The passes of a service task, one file per kind: each looks at the service's containers
//! and does what its kind's rules ask (`converge.rs` for services, `job_rules.rs` for jobs, the
//! schedule for cron).

mod cron;
mod job;
mod service;

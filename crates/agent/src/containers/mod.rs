//! Containers as the agent knows them: records in the state database, names and ids, and
//! their life (create, stop, kill, remove, wait) through the per-container shims.

pub mod lifecycle;
pub(crate) mod liveness;
pub mod names;
pub mod network;
pub mod query;
pub mod record;
pub mod request;
pub(crate) mod trash;

pub use lifecycle::{Created, WaitResult};
pub use query::{ContainerDetails, ContainerSummary};
pub use record::{ContainerRecord, ContainerState, ContainerStore};
pub use request::CreateRequest;

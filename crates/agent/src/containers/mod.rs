//! Containers as the agent knows them: records in the state database, names and ids.

pub mod names;
pub mod record;

pub use record::{ContainerRecord, ContainerState, ContainerStore};

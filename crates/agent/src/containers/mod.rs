//! Containers as the agent knows them: records in the state database, names and ids, and
//! their life (create, stop, kill, remove, wait) through the per-container shims; `exec` and
//! `attach` sessions, log streams and stats, as async calls every front end shares.

pub mod archive;
pub mod filter;
pub mod lifecycle;
pub(crate) mod liveness;
pub mod log_time;
pub mod logs;
pub mod names;
pub mod network;
pub mod pause;
pub mod port;
pub mod query;
pub mod record;
pub mod rename;
pub mod request;
pub mod session;
pub mod top;
pub(crate) mod trash;

pub use archive::{ArchiveStream, CopyResult, PathStat};
pub use filter::ContainerFilter;
pub use lifecycle::{Created, WaitResult};
pub use logs::{LogEntry, LogOptions, LogStream};
pub use query::{ContainerDetails, ContainerSummary};
pub use record::{ContainerRecord, ContainerState, ContainerStore};
pub use request::CreateRequest;
pub use session::{Session, SessionEvent, SessionStdin};
/// Types of the runtime the front ends speak in (they depend on the agent only).
pub use zlayer_runtime::logs::LogLoss;
pub use zlayer_runtime::ContainerStats;
pub use zlayer_runtime::{ExecSpec, Stream as OutputStream};

//! Listeners that containers can reach (the per-network DNS server, the published-port
//! forwarder) are attack surface: anything a container sends must not exhaust the daemon.
//!
//! - [`gate`]: caps on concurrent connections per listener, per client address and for the
//!   whole process (a share of `RLIMIT_NOFILE`), so descriptors stay bounded whatever a
//!   container opens.
//! - [`accept`]: an accept loop that backs off on errors (EMFILE never becomes a hot loop) and
//!   a limiter for repeated log lines.
//! - [`relay`]: a bidirectional copy that ends idle and overlong connections.

pub mod accept;
pub mod gate;
pub mod relay;

pub use accept::{accept_with_backoff, AcceptBackoff, LogLimiter};
pub use gate::{ConnGate, ConnLimits, ConnPermit, FdBudget, Refusal};
pub use relay::{relay, RelayTimeouts};

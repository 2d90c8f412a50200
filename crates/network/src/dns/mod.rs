//! Service discovery: a small DNS server per network that answers the daemon's service table and
//! forwards everything else to the host's resolvers.

pub mod registry;
pub mod resolv;
pub mod server;

pub use registry::DnsRegistry;
pub use server::DnsServer;

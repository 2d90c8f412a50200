//! Admission control for connections (and UDP associations) from untrusted clients.
//!
//! Every connection a container opens to one of the daemon's listeners costs the daemon one or
//! two file descriptors for as long as it lives. Without caps one container could take all of
//! them (the daemon then can no longer open its database, a shim's socket or a pipe, and every
//! user's `run` fails). Three caps apply to each new connection, all checked before it costs
//! anything lasting:
//!
//! 1. the listener's own total ([`ConnLimits::max_total`]),
//! 2. per client address ([`ConnLimits::max_per_client`]), so one container cannot take the
//!    listener's whole allowance from the others,
//! 3. the process-wide [`FdBudget`]: a share of `RLIMIT_NOFILE` that all such listeners
//!    together may use, so many networks and published ports cannot add up to exhaustion.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Concurrent connections (or associations) of the listener.
    pub max_total: usize,
    /// Concurrent connections from one client address.
    pub max_per_client: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener has `max` connections already.
    ListenerFull { max: usize },
    /// This client has `max` connections already.
    ClientFull { max: usize },
    /// The daemon's descriptors for container-reachable listeners (`max`) are all in use.
    ProcessFull { max: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ListenerFull { max } => write!(f, "the listener has {max} connections"),
            Refusal::ClientFull { max } => {
                write!(f, "the client has {max} connections (per-client cap)")
            }
            Refusal::ProcessFull { max } => write!(
                f,
                "the daemon's {max} descriptors for container-reachable listeners are in use"
            ),
        }
    }
}

/// The descriptors that all container-reachable listeners of the process may hold together.
#[derive(Debug)]
pub struct FdBudget {
    max: usize,
    used: AtomicUsize,
}

/// The share of `RLIMIT_NOFILE` (soft, read when the first listener starts, i.e. after the
/// daemon raised it) given to container-reachable listeners: half. The other half stays for
/// the daemon's own work (database, shim sockets, pipes, CNI plugin runs).
const BUDGET_SHARE_OF_NOFILE: u64 = 2;
/// Lower bound of the budget, for hosts with a tiny descriptor limit.
const MIN_BUDGET: usize = 64;

impl FdBudget {
    pub fn new(max: usize) -> Self {
        FdBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// The process's budget (half of the soft `RLIMIT_NOFILE` when first asked).
    pub fn process() -> Arc<FdBudget> {
        static BUDGET: OnceLock<Arc<FdBudget>> = OnceLock::new();
        BUDGET
            .get_or_init(|| {
                let soft =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                        .map(|(soft, _)| soft)
                        .unwrap_or(1024);
                let max = usize::try_from(soft / BUDGET_SHARE_OF_NOFILE)
                    .unwrap_or(usize::MAX)
                    .max(MIN_BUDGET);
                tracing::debug!(max, "descriptor budget of container-reachable listeners");
                Arc::new(FdBudget::new(max))
            })
            .clone()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The admission state of one listener. Cheap to share (`Arc`); each admitted connection holds
/// a [`ConnPermit`] that gives its place back when dropped.
#[derive(Debug)]
pub struct ConnGate {
    limits: ConnLimits,
    /// Descriptors one connection costs (2 for a relay: client and upstream).
    fds_per_conn: usize,
    budget: Arc<FdBudget>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl ConnGate {
    /// A gate drawing on the process's [`FdBudget`].
    pub fn new(limits: ConnLimits, fds_per_conn: usize) -> Arc<ConnGate> {
        Self::with_budget(limits, fds_per_conn, FdBudget::process())
    }

    pub fn with_budget(
        limits: ConnLimits,
        fds_per_conn: usize,
        budget: Arc<FdBudget>,
    ) -> Arc<ConnGate> {
        Arc::new(ConnGate {
            limits,
            fds_per_conn,
            budget,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Only counters are guarded; they are consistent after any panic point.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections currently admitted.
    pub fn active(&self) -> usize {
        self.counts().total
    }

    /// Admits one connection from `client`, or says which cap refuses it.
    pub fn try_admit(self: &Arc<Self>, client: IpAddr) -> Result<ConnPermit, Refusal> {
        let mut counts = self.counts();
        if counts.total >= self.limits.max_total {
            return Err(Refusal::ListenerFull {
                max: self.limits.max_total,
            });
        }
        let mine = counts.per_client.get(&client).copied().unwrap_or(0);
        if mine >= self.limits.max_per_client {
            return Err(Refusal::ClientFull {
                max: self.limits.max_per_client,
            });
        }
        if !self.budget.try_take(self.fds_per_conn) {
            return Err(Refusal::ProcessFull {
                max: self.budget.max(),
            });
        }
        counts.total += 1;
        counts.per_client.insert(client, mine + 1);
        Ok(ConnPermit {
            gate: Arc::clone(self),
            client,
        })
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    gate: Arc<ConnGate>,
    client: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        counts.total -= 1;
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
        self.gate.budget.give_back(self.gate.fds_per_conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn caps_per_client_per_listener_and_process() {
        let budget = Arc::new(FdBudget::new(10));
        let limits = ConnLimits {
            max_total: 4,
            max_per_client: 2,
        };
        let gate = ConnGate::with_budget(limits, 2, Arc::clone(&budget));
        let a1 = gate.try_admit(ip(1)).unwrap();
        let _a2 = gate.try_admit(ip(1)).unwrap();
        assert_eq!(
            gate.try_admit(ip(1)).unwrap_err(),
            Refusal::ClientFull { max: 2 }
        );
        let _b1 = gate.try_admit(ip(2)).unwrap();
        let _b2 = gate.try_admit(ip(2)).unwrap();
        assert_eq!(
            gate.try_admit(ip(3)).unwrap_err(),
            Refusal::ListenerFull { max: 4 }
        );
        assert_eq!(budget.used(), 8);
        // A second listener draws on the same budget: 2 descriptors left.
        let other = ConnGate::with_budget(limits, 2, Arc::clone(&budget));
        let _c1 = other.try_admit(ip(3)).unwrap();
        assert_eq!(
            other.try_admit(ip(4)).unwrap_err(),
            Refusal::ProcessFull { max: 10 }
        );
        // Dropping a permit gives its places back.
        drop(a1);
        assert_eq!(gate.active(), 3);
        assert_eq!(budget.used(), 8);
        let _a3 = gate.try_admit(ip(1)).unwrap();
        assert_eq!(budget.used(), 10);
    }

    #[test]
    fn process_budget_is_a_share_of_the_descriptor_limit() {
        let b = FdBudget::process();
        assert!(b.max() >= MIN_BUDGET);
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert!(b.max() as u64 <= (soft / 2).max(MIN_BUDGET as u64));
    }
}

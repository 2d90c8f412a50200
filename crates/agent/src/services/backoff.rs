//! Restart decisions and exponential backoff per replica slot.
//!
//! Kept in memory on purpose: after a daemon restart a crash-looping replica starts over at the
//! initial delay, which errs on the side of bringing a service back quickly.

use std::time::{Duration, Instant};

use zlayer_spec::{Backoff, RestartPolicy};

/// Whether a replica that ended with `exit_code` (and `oom_killed`) is restarted under `policy`.
pub fn should_restart(policy: RestartPolicy, exit_code: Option<i64>, oom_killed: bool) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => oom_killed || exit_code != Some(0),
    }
}

/// Failures of one replica slot and when it may be started again.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// Consecutive failures (reset once a replica ran for `reset_after`).
    pub failures: u32,
    started_at: Option<Instant>,
    not_before: Option<Instant>,
}

/// Failures in a row after which the slot counts as crash-looping.
pub const CRASH_LOOP_FAILURES: u32 = 3;

impl RestartTracker {
    /// A replica of this slot was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started_at = Some(now);
        self.not_before = None;
    }

    /// The slot's replica ended (or was replaced as unhealthy) at `now`: counts a failure, unless
    /// it had run stably for `reset_after`, and returns the delay before the next start.
    pub fn ended(&mut self, now: Instant, backoff: &Backoff) -> Duration {
        if let Some(s) = self.started_at.take() {
            if now.saturating_duration_since(s) >= backoff.reset_after.get() {
                self.failures = 0;
            }
        }
        self.failures = self.failures.saturating_add(1);
        let delay = backoff.delay(self.failures);
        self.not_before = Some(now + delay);
        delay
    }

    /// Whether a new replica may start at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// Time left before the next start.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.not_before
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// Whether the slot keeps failing.
    pub fn crash_looping(&self) -> bool {
        self.failures >= CRASH_LOOP_FAILURES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zlayer_spec::HumanDuration;

    fn backoff() -> Backoff {
        Backoff {
            initial: HumanDuration::secs(1),
            max: HumanDuration::secs(4),
            reset_after: HumanDuration::secs(10),
        }
    }

    #[test]
    fn policies() {
        assert!(!should_restart(RestartPolicy::Never, Some(1), false));
        assert!(should_restart(RestartPolicy::Always, Some(0), false));
        assert!(!should_restart(RestartPolicy::OnFailure, Some(0), false));
        assert!(should_restart(RestartPolicy::OnFailure, Some(0), true));
        assert!(should_restart(RestartPolicy::OnFailure, Some(137), false));
        assert!(should_restart(RestartPolicy::OnFailure, None, false));
    }

    #[test]
    fn exponential_then_capped_then_reset() {
        let b = backoff();
        let t0 = Instant::now();
        let mut t = RestartTracker::default();
        assert!(t.ready(t0));
        let delays: Vec<u64> = (0..5)
            .map(|_| {
                t.started(t0);
                t.ended(t0, &b).as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 4, 4]);
        assert!(t.crash_looping());
        assert!(!t.ready(t0));
        assert!(t.ready(t0 + Duration::from_secs(4)));
        // Ran stably for longer than reset_after: back to the initial delay.
        t.started(t0);
        assert_eq!(t.ended(t0 + Duration::from_secs(11), &b).as_secs(), 1);
        assert!(!t.crash_looping());
    }
}

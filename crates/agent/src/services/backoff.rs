//! Restart decisions and exponential backoff per replica slot.
//!
//! The supervisor keeps a tracker per slot in memory and stores it in `agent.db` (as wall-clock
//! times, see [`SavedTracker`]) whenever it changes, so a daemon restart does not reset a
//! crash-looping service to full speed.

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

    /// The tracker in wall-clock terms (`Instant`s mean nothing to the next process);
    /// `now` and `wall_ms` (Unix milliseconds) are the same moment.
    pub fn save(&self, now: Instant, wall_ms: i64) -> SavedTracker {
        let past = |t: Instant| wall_ms - now.saturating_duration_since(t).as_millis() as i64;
        let future = |t: Instant| wall_ms + t.saturating_duration_since(now).as_millis() as i64;
        SavedTracker {
            failures: self.failures,
            started_ms: self.started_at.map(past),
            not_before_ms: self.not_before.map(future),
        }
    }

    /// The tracker back from [`save`](Self::save), relative to `now` (= `wall_ms`). A start
    /// further back than this process's clock can express counts as "long ago" (stable).
    pub fn restore(saved: &SavedTracker, now: Instant, wall_ms: i64) -> Self {
        let ms = |d: i64| Duration::from_millis(d.max(0) as u64);
        Self {
            failures: saved.failures,
            started_at: saved.started_ms.map(|t| {
                now.checked_sub(ms(wall_ms - t))
                    .unwrap_or_else(|| now.checked_sub(Duration::from_secs(1)).unwrap_or(now))
            }),
            not_before: saved
                .not_before_ms
                .filter(|t| *t > wall_ms)
                .map(|t| now + ms(t - wall_ms)),
        }
    }
}

/// A [`RestartTracker`] as stored in `agent.db`: Unix milliseconds instead of `Instant`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SavedTracker {
    pub failures: u32,
    pub started_ms: Option<i64>,
    pub not_before_ms: Option<i64>,
}

/// Now as Unix milliseconds (the clock [`SavedTracker`] is in).
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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

    #[test]
    fn saved_and_restored_in_another_process_keeps_the_backoff() {
        let b = backoff();
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut t = RestartTracker::default();
        for _ in 0..3 {
            t.started(t0);
            t.ended(t0, &b);
        }
        // 4s backoff left at t0; saved at wall time 1_000_000 ms.
        let saved = t.save(t0, 1_000_000);
        assert_eq!(saved.failures, 3);
        assert_eq!(saved.not_before_ms, Some(1_004_000));
        assert_eq!(saved.started_ms, None);
        // "Restarted" 1.5s later in wall time, with an unrelated Instant base.
        let t1 = Instant::now() + Duration::from_secs(5);
        let r = RestartTracker::restore(&saved, t1, 1_001_500);
        assert!(r.crash_looping());
        assert!(!r.ready(t1));
        assert_eq!(r.remaining(t1), Duration::from_millis(2500));
        assert!(r.ready(t1 + Duration::from_millis(2500)));
        // Its backoff ran out while the daemon was down: ready at once, failures kept.
        let late = RestartTracker::restore(&saved, t1, 1_010_000);
        assert!(late.ready(t1));
        assert_eq!(late.failures, 3);
        // A running replica's start time comes back, so a stable run still resets.
        let mut running = RestartTracker::default();
        for _ in 0..2 {
            running.started(t0);
            running.ended(t0, &b);
        }
        running.started(t0);
        let saved = running.save(t0 + Duration::from_secs(3), 2_000_000);
        assert_eq!(saved.started_ms, Some(1_997_000));
        let mut back = RestartTracker::restore(&saved, t1, 2_009_000);
        assert_eq!(back.failures, 2);
        assert_eq!(back.ended(t1, &b).as_secs(), 1, "ran 12s > reset_after");
    }
}

//! The pure part of reconciling a `kind: service`: given the desired replica count and hash and
//! what the container records say runs, which containers to start and remove. No I/O, no
//! clocks: the supervisor feeds it observations and carries out the steps, so every rule here
//! (restart, scale, replace unhealthy, rolling update, clean up after a crash) has unit tests.
//!
//! Replicas live in numbered slots (`zlayer.replica` label). The rules are level-triggered:
//! applying them again to the same observation is harmless, and after a daemon crash at any
//! point the next pass finishes (or undoes) what was half done. That is what makes "SIGKILL
//! mid-rollout converges with no duplicates" true.

use std::collections::BTreeMap;
use std::time::Duration;

use zlayer_spec::{RestartPolicy, UpdateOrder};

use super::backoff::should_restart;
use super::health::HealthStatus;

/// One container of the service, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    pub slot: u32,
    pub hash: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// `None` when the service has no health check (a running replica counts as healthy).
    pub health: Option<HealthStatus>,
    /// Time since it started.
    pub age: Duration,
}

impl Observed {
    fn serving(&self) -> bool {
        self.running && matches!(self.health, None | Some(HealthStatus::Healthy))
    }

    /// Preference when a slot holds duplicates: healthy, then starting, then unhealthy; older
    /// first (it has proven itself longer).
    fn rank(&self) -> (u8, std::cmp::Reverse<Duration>) {
        let h = match self.health {
            None | Some(HealthStatus::Healthy) => 0,
            Some(HealthStatus::Starting) => 1,
            Some(HealthStatus::Unhealthy) => 2,
        };
        (h, std::cmp::Reverse(self.age))
    }
}

/// What the service should look like.
#[derive(Debug, Clone)]
pub struct Desired {
    pub replicas: u32,
    pub hash: String,
    pub policy: RestartPolicy,
    pub order: UpdateOrder,
    /// How long a new replica of a rollout may take to become healthy.
    pub health_timeout: Duration,
    /// The rollout to `hash` already failed: do not replace serving replicas again.
    pub rollout_blocked: bool,
}

/// Why a container is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Beyond the replica count.
    ScaledDown,
    /// A second container in the same slot (e.g. after a crash mid-rollout).
    Duplicate,
    /// Ended; its slot gets a new replica (the restart).
    Exited,
    /// Failed its health check.
    Unhealthy,
    /// Old version, replaced by a healthy new one (rolling update) or not serving anyway.
    Outdated,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ScaledDown => "scaled down",
            Reason::Duplicate => "duplicate replica",
            Reason::Exited => "exited",
            Reason::Unhealthy => "unhealthy",
            Reason::Outdated => "outdated",
        }
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start a replica of the desired version in `slot`.
    Start { slot: u32 },
    /// Stop and remove a container.
    Remove {
        id: String,
        slot: u32,
        reason: Reason,
    },
    /// The new replica of a rollout failed: remove it, keep the old ones, block the rollout.
    RolloutFailed { id: String, slot: u32, why: String },
}

/// The plan for one pass, and what to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub steps: Vec<Step>,
    /// A rolling update is in progress (or waiting to continue).
    pub rolling: bool,
    /// Slots waiting for their restart backoff.
    pub backing_off: Vec<u32>,
}

impl Pass {
    fn remove(&mut self, o: &Observed, reason: Reason) {
        self.steps.push(Step::Remove {
            id: o.id.clone(),
            slot: o.slot,
            reason,
        });
    }
}

/// The replicas of one slot, by version (current or old) and whether they run; running
/// current ones best first.
struct Slot<'a> {
    slot: u32,
    cur_running: Vec<&'a Observed>,
    cur_exited: Vec<&'a Observed>,
    old_running: Vec<&'a Observed>,
    old_exited: Vec<&'a Observed>,
}

impl<'a> Slot<'a> {
    fn new(slot: u32, reps: &[&'a Observed], hash: &str) -> Self {
        let (current, old): (Vec<&Observed>, Vec<&Observed>) =
            reps.iter().partition(|o| o.hash == hash);
        let mut cur_running: Vec<&Observed> =
            current.iter().copied().filter(|o| o.running).collect();
        cur_running.sort_by_key(|o| o.rank());
        Self {
            slot,
            cur_running,
            cur_exited: current.iter().copied().filter(|o| !o.running).collect(),
            old_running: old.iter().copied().filter(|o| o.running).collect(),
            old_exited: old.iter().copied().filter(|o| !o.running).collect(),
        }
    }
}

/// Computes one pass. `ready(slot)` says whether the slot's restart backoff allows a start now.
pub fn converge(want: &Desired, seen: &[Observed], ready: impl Fn(u32) -> bool) -> Pass {
    let mut pass = Pass::default();
    let mut slots: BTreeMap<u32, Vec<&Observed>> = BTreeMap::new();
    for o in seen {
        slots.entry(o.slot).or_default().push(o);
    }
    // Scale down: everything in slots at or beyond the replica count.
    for reps in slots.range(want.replicas..).map(|(_, reps)| reps) {
        for o in reps {
            pass.remove(o, Reason::ScaledDown);
        }
    }
    // A rollout replaces one slot at a time: is a slot already mid-replacement?
    let mut rollout_busy = (0..want.replicas).any(|slot| {
        let reps = slots.get(&slot).map(Vec::as_slice).unwrap_or_default();
        let new_pending = reps
            .iter()
            .any(|o| o.hash == want.hash && o.running && !o.serving());
        let old_running = reps.iter().any(|o| o.hash != want.hash && o.running);
        new_pending && old_running
    });
    for slot in 0..want.replicas {
        let reps: Vec<&Observed> = slots.get(&slot).cloned().unwrap_or_default();
        let s = Slot::new(slot, &reps, &want.hash);
        for o in &s.old_exited {
            pass.remove(o, Reason::Outdated);
        }
        if let Some(best) = s.cur_running.first().copied() {
            new_version_runs(&mut pass, want, &s, best);
        } else if !s.old_running.is_empty() {
            old_version_serves(&mut pass, want, &s, &mut rollout_busy);
        } else {
            nothing_runs(&mut pass, want, &s, &ready);
        }
    }
    pass
}

/// A replica of the current version runs in the slot (`best`, the best of them): duplicates
/// go; mid-rollout, its health decides the fate of the old ones.
fn new_version_runs(pass: &mut Pass, want: &Desired, s: &Slot<'_>, best: &Observed) {
    for o in s.cur_running[1..].iter().chain(&s.cur_exited) {
        pass.remove(o, Reason::Duplicate);
    }
    if s.old_running.is_empty() {
        if best.health == Some(HealthStatus::Unhealthy) {
            pass.remove(best, Reason::Unhealthy);
        }
        return;
    }
    // Mid-rollout in this slot: the new one decides the fate of the old ones.
    pass.rolling = true;
    let failed = |why: String| Step::RolloutFailed {
        id: best.id.clone(),
        slot: s.slot,
        why,
    };
    match best.health {
        None | Some(HealthStatus::Healthy) => {
            for o in &s.old_running {
                pass.remove(o, Reason::Outdated);
            }
        }
        Some(HealthStatus::Unhealthy) => pass
            .steps
            .push(failed("the new replica failed its health check".into())),
        Some(HealthStatus::Starting) if best.age > want.health_timeout => {
            pass.steps.push(failed(format!(
                "the new replica was not healthy within {}s",
                want.health_timeout.as_secs()
            )));
        }
        Some(HealthStatus::Starting) => {}
    }
}

/// Only the old version runs in the slot: one slot at a time (`rollout_busy`) starts its
/// replacement, unless a new replica of it already died (the rollout failed) or the rollout
/// is blocked.
fn old_version_serves(pass: &mut Pass, want: &Desired, s: &Slot<'_>, rollout_busy: &mut bool) {
    let mut old_sorted = s.old_running.clone();
    old_sorted.sort_by_key(|o| o.rank());
    for o in &old_sorted[1..] {
        pass.remove(o, Reason::Duplicate);
    }
    if let Some(failed) = s.cur_exited.first() {
        // A new replica started for this slot and died: the rollout failed.
        pass.rolling = true;
        pass.steps.push(Step::RolloutFailed {
            id: failed.id.clone(),
            slot: s.slot,
            why: format!(
                "the new replica exited with code {}",
                failed.exit_code.map_or("?".into(), |c| c.to_string())
            ),
        });
        return;
    }
    if want.rollout_blocked {
        return;
    }
    pass.rolling = true;
    if *rollout_busy {
        return;
    }
    *rollout_busy = true;
    if want.order == UpdateOrder::StopFirst {
        pass.remove(old_sorted[0], Reason::Outdated);
    }
    pass.steps.push(Step::Start { slot: s.slot });
}

/// Nothing of either version runs in the slot: (re)start it when the restart policy and the
/// backoff allow.
fn nothing_runs(pass: &mut Pass, want: &Desired, s: &Slot<'_>, ready: &impl Fn(u32) -> bool) {
    let slot = s.slot;
    let mut exited = s.cur_exited.clone();
    exited.sort_by_key(|o| o.rank());
    if let Some(last) = exited.first() {
        for o in &exited[1..] {
            pass.remove(o, Reason::Duplicate);
        }
        if !should_restart(want.policy, last.exit_code, last.oom_killed) {
            return; // finished for good under this restart policy
        }
        if !ready(slot) {
            pass.backing_off.push(slot);
            return;
        }
        pass.remove(last, Reason::Exited);
        pass.steps.push(Step::Start { slot });
        return;
    }
    if ready(slot) {
        pass.steps.push(Step::Start { slot });
    } else {
        pass.backing_off.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(replicas: u32) -> Desired {
        Desired {
            replicas,
            hash: "new".into(),
            policy: RestartPolicy::Always,
            order: UpdateOrder::StartFirst,
            health_timeout: Duration::from_secs(30),
            rollout_blocked: false,
        }
    }

    fn rep(id: &str, slot: u32, hash: &str, running: bool) -> Observed {
        Observed {
            id: id.into(),
            slot,
            hash: hash.into(),
            running,
            exit_code: (!running).then_some(1),
            oom_killed: false,
            health: None,
            age: Duration::from_secs(60),
        }
    }

    fn starts(p: &Pass) -> Vec<u32> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Start { slot } => Some(*slot),
                _ => None,
            })
            .collect()
    }

    fn removed(p: &Pass) -> Vec<(&str, Reason)> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Remove { id, reason, .. } => Some((id.as_str(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fresh_deploy_starts_every_slot_and_converged_is_a_no_op() {
        let p = converge(&want(3), &[], |_| true);
        assert_eq!(starts(&p), [0, 1, 2]);
        let seen = [
            rep("a", 0, "new", true),
            rep("b", 1, "new", true),
            rep("c", 2, "new", true),
        ];
        assert_eq!(converge(&want(3), &seen, |_| true), Pass::default());
    }

    #[test]
    fn scale_down_and_duplicates() {
        let mut young = rep("b2", 1, "new", true);
        young.age = Duration::from_secs(1);
        let seen = [
            rep("a", 0, "new", true),
            rep("b", 1, "new", true),
            young,
            rep("c", 2, "new", true),
        ];
        let p = converge(&want(2), &seen, |_| true);
        assert_eq!(
            removed(&p),
            [("c", Reason::ScaledDown), ("b2", Reason::Duplicate)]
        );
        assert!(starts(&p).is_empty());
    }

    #[test]
    fn restart_policy_and_backoff() {
        let seen = [rep("a", 0, "new", false)];
        let p = converge(&want(1), &seen, |_| false);
        assert_eq!(p.backing_off, [0]);
        assert!(p.steps.is_empty());
        let p = converge(&want(1), &seen, |_| true);
        assert_eq!(removed(&p), [("a", Reason::Exited)]);
        assert_eq!(starts(&p), [0]);
        let mut w = want(1);
        w.policy = RestartPolicy::OnFailure;
        let mut ok = rep("a", 0, "new", false);
        ok.exit_code = Some(0);
        assert_eq!(converge(&w, &[ok], |_| true), Pass::default());
        w.policy = RestartPolicy::Never;
        assert_eq!(converge(&w, &seen, |_| true), Pass::default());
    }

    #[test]
    fn unhealthy_replica_is_replaced() {
        let mut a = rep("a", 0, "new", true);
        a.health = Some(HealthStatus::Unhealthy);
        let p = converge(&want(1), &[a], |_| true);
        assert_eq!(removed(&p), [("a", Reason::Unhealthy)]);
    }

    #[test]
    fn rolling_update_one_slot_at_a_time() {
        // Two old replicas: start a new one in slot 0 only.
        let old = [rep("o0", 0, "old", true), rep("o1", 1, "old", true)];
        let p = converge(&want(2), &old, |_| true);
        assert_eq!(starts(&p), [0]);
        assert!(p.rolling);
        // New one starting in slot 0: wait, start nothing else.
        let mut n0 = rep("n0", 0, "new", true);
        n0.health = Some(HealthStatus::Starting);
        n0.age = Duration::from_secs(1);
        let seen = [old[0].clone(), old[1].clone(), n0.clone()];
        let p = converge(&want(2), &seen, |_| true);
        assert!(p.steps.is_empty() && p.rolling, "{p:?}");
        // Healthy: the old one of slot 0 goes, slot 1 starts its replacement.
        n0.health = Some(HealthStatus::Healthy);
        let seen = [old[0].clone(), old[1].clone(), n0.clone()];
        let p = converge(&want(2), &seen, |_| true);
        assert_eq!(removed(&p), [("o0", Reason::Outdated)]);
        // Slot 0 is done (its new replica serves), so slot 1 may begin in the same pass.
        assert_eq!(starts(&p), [1]);
    }

    #[test]
    fn failed_rollout_keeps_the_old_replicas() {
        let o0 = rep("o0", 0, "old", true);
        let mut n0 = rep("n0", 0, "new", true);
        n0.health = Some(HealthStatus::Unhealthy);
        let p = converge(&want(1), &[o0.clone(), n0.clone()], |_| true);
        assert!(matches!(&p.steps[..], [Step::RolloutFailed { id, .. }] if id == "n0"));
        // Exited new replica: failed too.
        let n0x = rep("n0", 0, "new", false);
        let p = converge(&want(1), &[o0.clone(), n0x], |_| true);
        assert!(
            matches!(&p.steps[..], [Step::RolloutFailed { why, .. }] if why.contains("exited"))
        );
        // Too slow.
        n0.health = Some(HealthStatus::Starting);
        n0.age = Duration::from_secs(31);
        let p = converge(&want(1), &[o0.clone(), n0], |_| true);
        assert!(
            matches!(&p.steps[..], [Step::RolloutFailed { why, .. }] if why.contains("within 30s"))
        );
        // Blocked: nothing more happens, the old one keeps serving.
        let mut w = want(1);
        w.rollout_blocked = true;
        assert!(converge(&w, &[o0], |_| true).steps.is_empty());
    }

    #[test]
    fn stop_first_and_dead_old_replicas() {
        let mut w = want(1);
        w.order = UpdateOrder::StopFirst;
        let p = converge(&w, &[rep("o0", 0, "old", true)], |_| true);
        assert_eq!(removed(&p), [("o0", Reason::Outdated)]);
        assert_eq!(starts(&p), [0]);
        // An old replica that already died is simply replaced by a new one.
        let p = converge(&want(1), &[rep("o0", 0, "old", false)], |_| true);
        assert_eq!(removed(&p), [("o0", Reason::Outdated)]);
        assert_eq!(starts(&p), [0]);
    }

    #[test]
    fn crash_mid_rollout_with_healthy_new_and_old_converges() {
        // Daemon died after starting the new one but before removing the old one.
        let seen = [
            rep("o0", 0, "old", true),
            rep("n0", 0, "new", true),
            rep("n0b", 0, "new", false),
        ];
        let p = converge(&want(1), &seen, |_| true);
        assert_eq!(
            removed(&p),
            [("n0b", Reason::Duplicate), ("o0", Reason::Outdated)]
        );
        assert!(starts(&p).is_empty());
    }
}

//! The rules of a job (`kind: job`), pure: given where the job stands and what its latest
//! attempt's container does, what the pass does next. `pass/job.rs` applies the answer (starts
//! containers, stores facts and runs, publishes events); the rules are unit-tested here.
//!
//! A job runs until one attempt exits 0. `retries: N` allows N more attempts after the first,
//! each after the backoff; when the last one fails the job is `failed` for this version of its
//! spec (a deploy of a changed spec starts over).

use super::state::JobState;

/// The latest attempt's container, as the pass finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// No container of the current attempt (never created, or removed).
    Missing,
    Running,
    Exited {
        code: i64,
    },
    /// Created but not (yet) running, or otherwise not running and not exited.
    Other,
}

/// Where the job stands (its stored facts) and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress {
    pub state: Option<JobState>,
    /// Attempts started for this version (the current attempt's number).
    pub attempts: u32,
    /// Attempts allowed after the first.
    pub retries: u32,
}

/// What a job's pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStep {
    /// Done: an attempt exited 0.
    Completed,
    /// Done: the last allowed attempt failed.
    Failed,
    /// The current attempt runs (the pass stops it when it exceeds its timeout).
    Running,
    /// The current attempt exited with `code`: record it; the job is then `then`.
    Finished { code: i64, then: JobState },
    /// Start attempt `attempt` once the backoff and the gates allow. Equal to the current
    /// attempt when the daemon died after counting it but before its container existed.
    Start { attempt: u32 },
}

/// The next step of a job.
pub fn job_step(p: JobProgress, latest: Attempt) -> JobStep {
    match p.state {
        Some(JobState::Succeeded) => return JobStep::Completed,
        Some(JobState::Failed) => return JobStep::Failed,
        _ => {}
    }
    match latest {
        Attempt::Running => return JobStep::Running,
        Attempt::Exited { code } if p.state == Some(JobState::Running) => {
            return JobStep::Finished {
                code,
                then: after_exit(code, p.attempts, p.retries),
            };
        }
        _ => {}
    }
    let redo = p.state == Some(JobState::Running) && latest == Attempt::Missing && p.attempts > 0;
    JobStep::Start {
        attempt: if redo { p.attempts } else { p.attempts + 1 },
    }
}

/// The job's state after attempt `attempt` exited with `code`.
pub fn after_exit(code: i64, attempt: u32, retries: u32) -> JobState {
    if code == 0 {
        JobState::Succeeded
    } else {
        after_failure(attempt, retries)
    }
}

/// The job's state after attempt `attempt` failed (exited non-zero, or could not start).
pub fn after_failure(attempt: u32, retries: u32) -> JobState {
    if attempt > retries {
        JobState::Failed
    } else {
        JobState::Retrying
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(state: Option<JobState>, attempts: u32, retries: u32) -> JobProgress {
        JobProgress {
            state,
            attempts,
            retries,
        }
    }

    #[test]
    fn a_new_job_starts_its_first_attempt() {
        assert_eq!(
            job_step(progress(None, 0, 2), Attempt::Missing),
            JobStep::Start { attempt: 1 }
        );
    }

    #[test]
    fn a_finished_job_stays_finished() {
        for latest in [
            Attempt::Missing,
            Attempt::Exited { code: 1 },
            Attempt::Running,
        ] {
            assert_eq!(
                job_step(progress(Some(JobState::Succeeded), 1, 0), latest),
                JobStep::Completed
            );
            assert_eq!(
                job_step(progress(Some(JobState::Failed), 3, 2), latest),
                JobStep::Failed
            );
        }
    }

    #[test]
    fn a_running_attempt_is_left_alone() {
        assert_eq!(
            job_step(progress(Some(JobState::Running), 1, 0), Attempt::Running),
            JobStep::Running
        );
    }

    #[test]
    fn exit_zero_succeeds_at_any_attempt() {
        assert_eq!(
            job_step(
                progress(Some(JobState::Running), 3, 2),
                Attempt::Exited { code: 0 }
            ),
            JobStep::Finished {
                code: 0,
                then: JobState::Succeeded
            }
        );
    }

    #[test]
    fn retries_count_attempts_after_the_first() {
        // retries: 2 = three attempts; the first two failures retry, the third fails the job.
        let exit = |attempt| {
            job_step(
                progress(Some(JobState::Running), attempt, 2),
                Attempt::Exited { code: 7 },
            )
        };
        for attempt in [1, 2] {
            assert_eq!(
                exit(attempt),
                JobStep::Finished {
                    code: 7,
                    then: JobState::Retrying
                }
            );
        }
        assert_eq!(
            exit(3),
            JobStep::Finished {
                code: 7,
                then: JobState::Failed
            }
        );
        // No retries: the first failure is final.
        assert_eq!(after_exit(1, 1, 0), JobState::Failed);
        assert_eq!(after_failure(1, 0), JobState::Failed);
        assert_eq!(after_failure(1, 1), JobState::Retrying);
    }

    #[test]
    fn a_retrying_job_starts_the_next_attempt() {
        // The exited container of the failed attempt is still there (for its logs).
        assert_eq!(
            job_step(
                progress(Some(JobState::Retrying), 1, 2),
                Attempt::Exited { code: 7 }
            ),
            JobStep::Start { attempt: 2 }
        );
        assert_eq!(
            job_step(progress(Some(JobState::Retrying), 2, 2), Attempt::Missing),
            JobStep::Start { attempt: 3 }
        );
    }

    #[test]
    fn an_attempt_without_container_is_redone_not_counted_twice() {
        // The daemon died between counting attempt 2 and creating its container.
        assert_eq!(
            job_step(progress(Some(JobState::Running), 2, 5), Attempt::Missing),
            JobStep::Start { attempt: 2 }
        );
        // A container that exists but never ran is replaced by the next attempt.
        assert_eq!(
            job_step(progress(Some(JobState::Running), 2, 5), Attempt::Other),
            JobStep::Start { attempt: 3 }
        );
    }
}

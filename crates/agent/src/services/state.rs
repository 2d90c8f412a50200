//! The states the supervisor tracks, as enums. Each keeps the exact text it had as a string
//! (`as_str`, `FromStr`, serde, SQL), so the API, the CLI and databases written by earlier
//! builds see no change.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A text that names none of an enum's states (read from a database or a label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}")]
pub struct UnknownState {
    pub what: &'static str,
    pub text: String,
}

/// Declares `as_str`, `Display`, `FromStr` and SQL conversions for a fieldless enum from one
/// table of variant/text pairs, so the text can never differ between directions.
macro_rules! text_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every state, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The text on the wire and on disk.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err(UnknownState { what: $what, text: s.to_string() }),
                }
            }
        }

        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: UnknownState| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

/// What `services` shows a service doing (the `STATE` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewState {
    /// No pass has looked at it yet.
    #[default]
    Pending,
    /// Waiting for a dependency or a retry delay.
    Waiting,
    /// Init steps run or replicas are not all up (or healthy) yet.
    Starting,
    Running,
    /// Replicas of an older version are being replaced.
    Rolling,
    /// The new version failed its rollout; the previous replicas keep serving.
    RolloutFailed,
    /// Replicas keep exiting and wait out their backoff.
    CrashLoop,
    Error,
    /// A job that exited 0.
    Completed,
    /// A job that used up its retries.
    Failed,
    /// A cron entry between runs.
    Scheduled,
}

text_enum!(ViewState, "service state", {
    Pending => "pending",
    Waiting => "waiting",
    Starting => "starting",
    Running => "running",
    Rolling => "rolling",
    RolloutFailed => "rollout-failed",
    CrashLoop => "crash-loop",
    Error => "error",
    Completed => "completed",
    Failed => "failed",
    Scheduled => "scheduled",
});

/// Where a job (`kind: job`) stands with the current version of its spec; stored in
/// `service_status.job_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// An attempt was started (its container may not exist yet if the daemon died).
    Running,
    /// An attempt failed; the next one starts after the backoff.
    Retrying,
    /// An attempt exited 0: the job is done for this version.
    Succeeded,
    /// The last allowed attempt failed.
    Failed,
}

text_enum!(JobState, "job state", {
    Running => "running",
    Retrying => "retrying",
    Succeeded => "succeeded",
    Failed => "failed",
});

/// The outcome of one run of a job or cron entry (`service_runs.state`, and `runs` in the
/// API's service list).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// A cron fire skipped because the previous run still ran (`concurrency: forbid`).
    Skipped,
    /// Its container disappeared before it finished (removed while no daemon ran).
    Lost,
}

text_enum!(RunState, "run state", {
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Skipped => "skipped",
    Lost => "lost",
});

impl RunState {
    /// The outcome of a run that exited with `code`.
    pub fn of_exit(code: i64) -> Self {
        if code == 0 {
            Self::Succeeded
        } else {
            Self::Failed
        }
    }
}

/// What a supervisor-started container is to its service (the `zlayer.kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerKind {
    /// A replica of a `kind: service`.
    Service,
    /// An attempt of a `kind: job`.
    Job,
    /// A run of a `kind: cron`.
    Cron,
    /// A `run` init step, removed when it ends.
    Init,
}

text_enum!(OwnerKind, "container kind", {
    Service => "service",
    Job => "job",
    Cron => "cron",
    Init => "init",
});

impl From<zlayer_spec::Kind> for OwnerKind {
    fn from(k: zlayer_spec::Kind) -> Self {
        match k {
            zlayer_spec::Kind::Service => Self::Service,
            zlayer_spec::Kind::Job => Self::Job,
            zlayer_spec::Kind::Cron => Self::Cron,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = UnknownState>,
    {
        for s in all {
            assert_eq!(s.to_string().parse::<T>().unwrap(), *s);
        }
    }

    #[test]
    fn text_round_trips_and_matches_the_old_strings() {
        round_trips(ViewState::ALL);
        round_trips(JobState::ALL);
        round_trips(RunState::ALL);
        round_trips(OwnerKind::ALL);
        for k in [
            zlayer_spec::Kind::Service,
            zlayer_spec::Kind::Job,
            zlayer_spec::Kind::Cron,
        ] {
            assert_eq!(OwnerKind::from(k).as_str(), k.as_str());
        }
        assert_eq!(ViewState::RolloutFailed.as_str(), "rollout-failed");
        assert_eq!(ViewState::CrashLoop.as_str(), "crash-loop");
        assert_eq!(
            serde_json::to_string(&RunState::Succeeded).unwrap(),
            "\"succeeded\""
        );
        assert_eq!(
            serde_json::to_string(&JobState::Retrying).unwrap(),
            "\"retrying\""
        );
        let e = "done".parse::<RunState>().unwrap_err();
        assert_eq!(e.to_string(), "unknown run state \"done\"");
    }

    #[test]
    fn sql_round_trip() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let back: RunState = c
            .query_row("SELECT ?1", [RunState::Lost], |r| r.get(0))
            .unwrap();
        assert_eq!(back, RunState::Lost);
        let bad: rusqlite::Result<JobState> = c.query_row("SELECT 'x'", [], |r| r.get(0));
        assert!(bad.is_err());
    }
}

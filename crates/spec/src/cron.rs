//! Cron schedules: classic 5-field expressions, `@hourly`-style macros and `@every DURATION`,
//! and the pure "next fire time after T" computation the cron supervisor needs.
//!
//! Semantics follow Vixie cron (the cron of Debian and most Unixes):
//! * fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC) and day of
//!   week (0-7 or SUN-SAT; 0 and 7 are both Sunday);
//! * each field is a comma list of `*`, `N`, `A-B`, each optionally `/STEP`; `N/STEP` means
//!   `N-MAX/STEP`;
//! * when both day-of-month and day-of-week are restricted (neither field starts with `*`), a day
//!   matches if EITHER matches; otherwise both must match.
//!
//! All times are UTC. Hand-written (rather than the `cron` crate) because that crate uses a
//! 6/7-field seconds-first syntax and AND semantics for the day fields, both unlike crontab.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, TimeZone, Timelike, Utc};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{HumanDuration, UnitError};

/// Why a `schedule` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `@every` with an interval that is not a duration.
    #[error(transparent)]
    Interval(#[from] UnitError),
    /// The expression is not a schedule; the message says what is wrong and what is accepted.
    #[error("{0}")]
    Invalid(String),
}

/// A [`ScheduleError::Invalid`] with a `format!` message.
macro_rules! sched_err {
    ($($arg:tt)*) => {
        ScheduleError::Invalid(format!($($arg)*))
    };
}

/// A parsed schedule. Keeps its source text for display and serialization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    kind: ScheduleKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ScheduleKind {
    Fields(CronFields),
    Every(HumanDuration),
}

/// The five fields as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CronFields {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    FieldSpec {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
    },
];

impl FieldSpec {
    fn value(&self, s: &str) -> Result<u32, ScheduleError> {
        if let Some(i) = self.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            // Month names start at 1, weekday names at 0 (SUN).
            return Ok(i as u32 + self.min);
        }
        let v: u32 = s.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(" or a name like {}", self.names[0])
            };
            sched_err!(
                "invalid {} `{s}`: expected a number {}-{}{names}",
                self.name,
                self.min,
                self.max
            )
        })?;
        if v < self.min || v > self.max {
            return Err(sched_err!(
                "{} {v} is out of range {}-{}",
                self.name,
                self.min,
                self.max
            ));
        }
        Ok(v)
    }

    /// Parses one field into a bit set (bit N = value N).
    fn parse(&self, field: &str) -> Result<u64, ScheduleError> {
        let mut bits = 0u64;
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .map_err(|_| sched_err!("invalid step `{s}` in {} `{field}`", self.name))?;
                    if step == 0 {
                        return Err(sched_err!("step 0 in {} `{field}`", self.name));
                    }
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(sched_err!("{} range `{range}` goes backwards", self.name));
                }
                (a, b)
            } else if range.is_empty() {
                return Err(sched_err!("empty item in {} `{field}`", self.name));
            } else {
                let a = self.value(range)?;
                // `N/STEP` means from N to the end of the range.
                (a, if step.is_some() { self.max } else { a })
            };
            let step = step.unwrap_or(1);
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Schedule, ScheduleError> {
        let text = s.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@reboot" => return Err(ScheduleError::Invalid("`@reboot` is not supported: use a job (kind: job) instead".to_owned())),
            lower if lower.starts_with("@every") => {
                let d: HumanDuration = text["@every".len()..].trim().parse()?;
                if d.0 < std::time::Duration::from_secs(1) {
                    return Err(sched_err!("`{text}`: the interval must be at least 1s"));
                }
                return Ok(Schedule { source: text.to_owned(), kind: ScheduleKind::Every(d) });
            }
            lower if lower.starts_with('@') => {
                return Err(sched_err!(
                    "unknown schedule `{text}`: use @yearly, @monthly, @weekly, @daily, @hourly, @every DURATION or 5 cron fields"
                ))
            }
            _ => text,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(sched_err!(
                "schedule `{text}` has {} fields; expected 5 (minute hour day-of-month month day-of-week) or a macro like @daily",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        for (i, (spec, part)) in FIELDS.iter().zip(&parts).enumerate() {
            bits[i] = spec.parse(part)?;
        }
        // Day of week 7 is Sunday too.
        let mut dow = bits[4];
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & 0x7f;
        }
        Ok(Schedule {
            source: text.to_owned(),
            kind: ScheduleKind::Fields(CronFields {
                minutes: bits[0],
                hours: bits[1] as u32,
                days_of_month: bits[2] as u32,
                months: bits[3] as u16,
                days_of_week: dow as u8,
                dom_star: parts[2].starts_with('*'),
                dow_star: parts[4].starts_with('*'),
            }),
        })
    }
}

impl CronFields {
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Start at the next whole minute strictly after `after`.
        let start = after.with_second(0)?.with_nanosecond(0)? + ChronoDuration::minutes(1);
        let mut date = start.date_naive();
        let (mut hour, mut minute) = (start.hour(), start.minute());
        // 28 years covers every weekday/leap-year combination; beyond that it never fires.
        let limit = date.checked_add_days(chrono::Days::new(366 * 28 + 7))?;
        while date <= limit {
            if self.months & (1 << date.month()) == 0 || !self.day_matches(date) {
                date = date.succ_opt()?;
                hour = 0;
                minute = 0;
                continue;
            }
            let found = (hour..24)
                .filter(|h| self.hours & (1 << h) != 0)
                .find_map(|h| {
                    let from = if h == hour { minute } else { 0 };
                    (from..60)
                        .find(|m| self.minutes & (1 << m) != 0)
                        .map(|m| (h, m))
                });
            if let Some((h, m)) = found {
                return Some(Utc.from_utc_datetime(&date.and_hms_opt(h, m, 0)?));
            }
            date = date.succ_opt()?;
            hour = 0;
            minute = 0;
        }
        None
    }
}

impl Schedule {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// For `@every D` schedules, the interval.
    pub fn interval(&self) -> Option<HumanDuration> {
        match self.kind {
            ScheduleKind::Every(d) => Some(d),
            ScheduleKind::Fields(_) => None,
        }
    }

    /// The first fire time strictly after `after` (whole minutes for cron fields), or `None`
    /// if the expression can never fire (e.g. `0 0 30 2 *`).
    ///
    /// For `@every D` the result is `after + D`: pass the time of the previous run (or of the
    /// deployment) as `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            ScheduleKind::Fields(f) => f.next_after(after),
            ScheduleKind::Every(d) => after.checked_add_signed(ChronoDuration::from_std(d.0).ok()?),
        }
    }

    /// Whether the expression can ever fire (checked once at validation time).
    pub fn can_fire(&self) -> bool {
        // 2000-01-01 is a Saturday in a leap year; any possible date occurs within 28 years.
        let origin = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        origin.and_then(|o| self.next_after(o)).is_some()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str) -> String {
        let s: Schedule = expr.parse().unwrap();
        s.next_after(t(after)).unwrap().to_rfc3339()
    }

    #[test]
    fn every_minute_and_truncation() {
        assert_eq!(
            next("* * * * *", "2024-05-01T10:00:00Z"),
            "2024-05-01T10:01:00+00:00"
        );
        assert_eq!(
            next("* * * * *", "2024-05-01T10:00:59.9Z"),
            "2024-05-01T10:01:00+00:00"
        );
        assert_eq!(
            next("* * * * *", "2024-12-31T23:59:30Z"),
            "2025-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn fixed_times() {
        assert_eq!(
            next("0 3 * * *", "2024-05-01T10:00:00Z"),
            "2024-05-02T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2024-05-01T02:59:00Z"),
            "2024-05-01T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2024-05-01T03:00:00Z"),
            "2024-05-02T03:00:00+00:00"
        );
        assert_eq!(
            next("30 14 1 * *", "2024-01-15T00:00:00Z"),
            "2024-02-01T14:30:00+00:00"
        );
    }

    #[test]
    fn ranges_steps_lists() {
        assert_eq!(
            next("*/15 * * * *", "2024-05-01T10:01:00Z"),
            "2024-05-01T10:15:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-05-01T10:46:00Z"),
            "2024-05-01T11:00:00+00:00"
        );
        assert_eq!(
            next("5-10/2 * * * *", "2024-05-01T10:07:00Z"),
            "2024-05-01T10:09:00+00:00"
        );
        assert_eq!(
            next("5-10/2 * * * *", "2024-05-01T10:09:00Z"),
            "2024-05-01T11:05:00+00:00"
        );
        assert_eq!(
            next("0 9,17 * * *", "2024-05-01T10:00:00Z"),
            "2024-05-01T17:00:00+00:00"
        );
        assert_eq!(
            next("50/5 * * * *", "2024-05-01T10:51:00Z"),
            "2024-05-01T10:55:00+00:00"
        );
        assert_eq!(
            next("0 0-6/3,22 * * *", "2024-05-01T07:00:00Z"),
            "2024-05-01T22:00:00+00:00"
        );
    }

    #[test]
    fn names() {
        // 2024-05-01 is a Wednesday.
        assert_eq!(
            next("0 8 * * MON-FRI", "2024-05-03T09:00:00Z"),
            "2024-05-06T08:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 jan,Jul *", "2024-02-01T00:00:00Z"),
            "2024-07-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * sun", "2024-05-01T00:00:00Z"),
            "2024-05-05T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "2024-05-01T00:00:00Z"),
            "2024-05-05T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 5-7", "2024-05-01T00:00:00Z"),
            "2024-05-03T00:00:00+00:00"
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: the 13th OR any Friday. After Wed 2024-05-01 the first Friday is the 3rd.
        assert_eq!(
            next("0 0 13 * FRI", "2024-05-01T00:00:00Z"),
            "2024-05-03T00:00:00+00:00"
        );
        // After Fri 2024-05-10 the 13th (a Monday) comes before the next Friday (17th).
        assert_eq!(
            next("0 0 13 * FRI", "2024-05-10T12:00:00Z"),
            "2024-05-13T00:00:00+00:00"
        );
        // Day of week is `*`: only the day of month counts (AND with everything).
        assert_eq!(
            next("0 0 13 * *", "2024-05-01T00:00:00Z"),
            "2024-05-13T00:00:00+00:00"
        );
        // Day of month starts with `*` (even with a step): AND semantics, so odd days that are Mondays.
        assert_eq!(
            next("0 0 */2 * MON", "2024-05-01T00:00:00Z"),
            "2024-05-13T00:00:00+00:00"
        );
    }

    #[test]
    fn leap_day_and_never() {
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "2096-03-01T00:00:00Z"),
            "2104-02-29T00:00:00+00:00"
        );
        let never: Schedule = "0 0 30 2 *".parse().unwrap();
        assert_eq!(never.next_after(t("2024-01-01T00:00:00Z")), None);
        assert!(!never.can_fire());
        assert!("0 0 29 2 *".parse::<Schedule>().unwrap().can_fire());
    }

    #[test]
    fn macros() {
        assert_eq!(
            next("@hourly", "2024-05-01T10:20:00Z"),
            "2024-05-01T11:00:00+00:00"
        );
        assert_eq!(
            next("@daily", "2024-05-01T10:20:00Z"),
            "2024-05-02T00:00:00+00:00"
        );
        assert_eq!(
            next("@midnight", "2024-05-01T10:20:00Z"),
            "2024-05-02T00:00:00+00:00"
        );
        assert_eq!(
            next("@weekly", "2024-05-01T10:20:00Z"),
            "2024-05-05T00:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", "2024-05-01T10:20:00Z"),
            "2024-06-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@yearly", "2024-05-01T10:20:00Z"),
            "2025-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@annually", "2024-05-01T10:20:00Z"),
            "2025-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("@every 90s", "2024-05-01T10:20:05Z"),
            "2024-05-01T10:21:35+00:00"
        );
        let every: Schedule = "@every 1h30m".parse().unwrap();
        assert_eq!(every.interval(), Some(HumanDuration::secs(5400)));
        assert_eq!(every.to_string(), "@every 1h30m");
    }

    #[test]
    fn errors() {
        let e = |s: &str| s.parse::<Schedule>().unwrap_err().to_string();
        assert!(e("* * * *").contains("has 4 fields; expected 5"));
        assert!(e("60 * * * *").contains("minute 60 is out of range 0-59"));
        assert!(e("* 24 * * *").contains("hour 24 is out of range 0-23"));
        assert!(e("* * 0 * *").contains("day of month 0 is out of range 1-31"));
        assert!(e("* * * 13 *").contains("month 13 is out of range 1-12"));
        assert!(e("* * * * 8").contains("day of week 8 is out of range 0-7"));
        assert!(e("* * * FOO *").contains("invalid month `FOO`"));
        assert!(e("*/0 * * * *").contains("step 0"));
        assert!(e("10-5 * * * *").contains("goes backwards"));
        assert!(e("1,,2 * * * *").contains("empty item"));
        assert!(e("@reboot").contains("not supported"));
        assert!(e("@fortnightly").contains("unknown schedule"));
        assert!(e("@every 10").contains("needs a unit"));
        assert!(e("@every 10ms").contains("at least 1s"));
    }

    #[test]
    fn serde_round_trip() {
        let s: Schedule = serde_json::from_str("\"*/5 * * * *\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"*/5 * * * *\"");
        assert!(serde_json::from_str::<Schedule>("\"bad\"").is_err());
    }
}

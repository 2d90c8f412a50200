//! docker's time arguments of `logs --since/--until` (and later `events`): RFC 3339
//! (`2026-12-03T19:33:16Z`, with or without fraction or zone), a date (`2026-12-03`),
//! Unix seconds with an optional fraction (`1764790396.5`), or a Go duration before now
//! (`10m`, `1h30m`, `1.5h`, `250ms`).
//!
//! The Go duration grammar is hand-written (about 30 lines): `humantime` does not read Go's
//! concatenated decimal form (`1.5h30m`), and scripts written for docker use it.

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::error::{AgentError, Result};

/// Parses one of docker's time forms; relative durations count back from `now`.
/// `flag` names the option in the error (`--since`).
pub fn parse_log_time(flag: &str, value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let v = value.trim();
    let bad = || {
        AgentError::invalid(format!(
            "{flag} {value:?}: expected an RFC 3339 time (2026-12-03T19:30:00Z), a date, \
             Unix seconds (1796299200) or a duration before now (10m, 1h30m)"
        ))
    };
    if v.is_empty() {
        return Err(bad());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    // Without a zone: local time, as docker.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, fmt) {
            return local(t).ok_or_else(bad);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return local(d.and_hms_opt(0, 0, 0).ok_or_else(bad)?).ok_or_else(bad);
    }
    if let Some(t) = unix_seconds(v) {
        return t.ok_or_else(bad);
    }
    let nanos = go_duration_nanos(v).ok_or_else(bad)?;
    let d = chrono::Duration::nanoseconds(i64::try_from(nanos).map_err(|_| bad())?);
    now.checked_sub_signed(d).ok_or_else(bad)
}

/// The `since` and `until` bounds of a `logs` call; `None` is open.
pub type LogWindow = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `since`/`until` query values of `logs`, read against the clock now.
pub fn log_window(since: Option<&str>, until: Option<&str>) -> Result<LogWindow> {
    let now = Utc::now();
    let read = |flag, v: Option<&str>| v.map(|v| parse_log_time(flag, v, now)).transpose();
    Ok((read("since", since)?, read("until", until)?))
}

fn local(t: NaiveDateTime) -> Option<DateTime<Utc>> {
    Local
        .from_local_datetime(&t)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// `Some(..)` when `v` looks like Unix seconds (`123` or `123.456`); the inner `None` when
/// it is out of range.
fn unix_seconds(v: &str) -> Option<Option<DateTime<Utc>>> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !(frac.is_empty() || digits(frac)) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(
        secs.parse::<i64>()
            .ok()
            .and_then(|s| Utc.timestamp_opt(s, nanos).single()),
    )
}

/// Go's `time.ParseDuration`: an optional sign, then one or more decimal numbers each with
/// a unit (ns, us, µs, ms, s, m, h). Nanoseconds, or `None` when `v` is not one.
fn go_duration_nanos(v: &str) -> Option<i128> {
    let (sign, mut rest) = match v.as_bytes().first()? {
        b'-' => (-1, &v[1..]),
        b'+' => (1, &v[1..]),
        _ => (1, v),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total.is_finite() && total < 9.2e18).then(|| sign * total as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-03T12:00:00Z".parse().unwrap()
    }

    fn at(v: &str) -> String {
        parse_log_time("--since", v, now()).unwrap().to_rfc3339()
    }

    #[test]
    fn rfc3339_and_unix_seconds() {
        assert_eq!(at("2026-12-03T10:00:00Z"), "2026-12-03T10:00:00+00:00");
        assert_eq!(
            at("2026-12-03T10:00:00.5+01:00"),
            "2026-12-03T09:00:00.500+00:00"
        );
        assert_eq!(at("1796299200"), "2026-12-03T12:00:00+00:00");
        assert_eq!(at("1796299200.25"), "2026-12-03T12:00:00.250+00:00");
    }

    #[test]
    fn relative_go_durations_count_back_from_now() {
        assert_eq!(at("10m"), "2026-12-03T11:50:00+00:00");
        assert_eq!(at("1h30m"), "2026-12-03T10:30:00+00:00");
        assert_eq!(at("1.5h"), "2026-12-03T10:30:00+00:00");
        assert_eq!(at("90s"), "2026-12-03T11:58:30+00:00");
        assert_eq!(at("500ms"), "2026-12-03T11:59:59.500+00:00");
        assert_eq!(at("0s"), "2026-12-03T12:00:00+00:00");
        // A bare 0 is Unix seconds, as in docker.
        assert_eq!(at("0"), "1970-01-01T00:00:00+00:00");
    }

    #[test]
    fn zoneless_times_and_dates_parse() {
        assert!(parse_log_time("--since", "2026-12-03T10:00:00", now()).is_ok());
        assert!(parse_log_time("--since", "2026-12-03", now()).is_ok());
    }

    #[test]
    fn nonsense_is_refused_naming_flag_and_value() {
        for bad in [
            "",
            "yesterday",
            "1x",
            "h",
            "1.2.3s",
            "--5m",
            "99999999999999999999",
        ] {
            let e = parse_log_time("--until", bad, now())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--until") && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }
}

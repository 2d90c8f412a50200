//! Value types written as human strings in a spec: byte sizes, durations and CPU amounts.
//!
//! Parsing is hand-written because the accepted grammar is part of our file format (and its error
//! messages must say exactly what is accepted); the few existing crates each pick a different
//! meaning for suffixes like `k` or `m`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Which kind of value failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// A [`ByteSize`].
    Size,
    /// A [`HumanDuration`].
    Duration,
    /// A [`Cpu`] amount.
    Cpu,
}

/// A size, duration or CPU amount that could not be read; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnitError {
    /// What was being read.
    pub kind: UnitKind,
    /// What is wrong and what is accepted, in words a user can act on.
    pub message: String,
}

/// A [`UnitError`] of `kind` with a `format!` message.
macro_rules! unit_err {
    ($kind:expr, $($arg:tt)*) => {
        UnitError { kind: $kind, message: format!($($arg)*) }
    };
}

/// A number of bytes, written `1048576`, `64Mi`, `1G`, `512k`, `1.5Gi`.
///
/// Suffixes follow Kubernetes: `k`/`K`, `M`, `G`, `T`, `P`, `E` (optionally followed by `B`) are
/// decimal powers of 1000; `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei` (optionally followed by `B`) are binary
/// powers of 1024. Docker reads lowercase `m`/`g` as MiB/GiB while Kubernetes reads `m` as
/// "milli"; to avoid silently picking the wrong one, `m`, `g`, `mb` and `gb` are rejected with a
/// hint. Fractions are rounded up to a whole byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

const SIZE_SUFFIXES: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("k", 1_000),
    ("K", 1_000),
    ("kB", 1_000),
    ("KB", 1_000),
    ("M", 1_000_000),
    ("MB", 1_000_000),
    ("G", 1_000_000_000),
    ("GB", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
    ("EB", 1_000_000_000_000_000_000),
    ("Ki", 1 << 10),
    ("KiB", 1 << 10),
    ("Mi", 1 << 20),
    ("MiB", 1 << 20),
    ("Gi", 1 << 30),
    ("GiB", 1 << 30),
    ("Ti", 1 << 40),
    ("TiB", 1 << 40),
    ("Pi", 1 << 50),
    ("PiB", 1 << 50),
    ("Ei", 1 << 60),
    ("EiB", 1 << 60),
];

/// Splits `"1.5Gi"` into `("1.5", "Gi")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Multiplies a decimal number given as text by `unit` exactly (no float rounding for integers),
/// rounding a fractional result up. `None` on overflow or a malformed number.
fn scale_decimal(num: &str, unit: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let denom = 10u128.pow(frac.len() as u32);
    let whole = int.checked_mul(unit)?;
    let part = frac_val.checked_mul(unit)?;
    whole.checked_add(part.div_ceil(denom))
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let (num, suffix) = split_number(t);
        if num.is_empty() {
            return Err(unit_err!(
                UnitKind::Size,
                "invalid size `{s}`: expected a number of bytes like `64Mi`, `1G` or `1048576`"
            ));
        }
        if matches!(
            suffix,
            "m" | "g" | "mb" | "gb" | "t" | "kb" | "kib" | "mib" | "gib"
        ) {
            let upper = suffix.to_ascii_uppercase();
            let letter = &upper[..1];
            return Err(unit_err!(
                UnitKind::Size,
                "ambiguous size suffix in `{s}`: write `{num}{letter}i` for binary (x1024) or `{num}{letter}` for decimal (x1000) units"
            ));
        }
        let Some((_, unit)) = SIZE_SUFFIXES.iter().find(|(name, _)| *name == suffix) else {
            return Err(unit_err!(
                UnitKind::Size,
                "invalid size suffix `{suffix}` in `{s}`: use one of Ki, Mi, Gi, Ti (x1024) or k, M, G, T (x1000), or none for bytes"
            ));
        };
        let bytes = scale_decimal(num, u128::from(*unit))
            .ok_or_else(|| unit_err!(UnitKind::Size, "invalid size `{s}`"))?;
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| unit_err!(UnitKind::Size, "size `{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// Prints the exact value with the largest binary suffix that divides it (`64Mi`), else bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, unit) in [
            ("Ei", 1u64 << 60),
            ("Pi", 1 << 50),
            ("Ti", 1 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if self.0 != 0 && self.0 % unit == 0 {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count or a size string like \"64Mi\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written `500ms`, `2s`, `1m30s`, `1h`, `1.5s` or `1d`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d` (24h); components may be combined from
/// largest to smallest (`1h30m`). A bare number is rejected (except `0`) because `timeout: 30`
/// is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of whole seconds.
    pub const fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }

    /// A duration of milliseconds.
    pub const fn millis(ms: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(ms))
    }

    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let usage = "expected a duration like `500ms`, `2s`, `1m30s` or `1h`";
        if t == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        if t.is_empty() {
            return Err(unit_err!(UnitKind::Duration, "empty duration: {usage}"));
        }
        let mut rest = t;
        let mut total: u128 = 0;
        let mut last_unit = u128::MAX;
        while !rest.is_empty() {
            let (num, after) = split_number(rest);
            if num.is_empty() {
                return Err(unit_err!(
                    UnitKind::Duration,
                    "invalid duration `{s}`: {usage}"
                ));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let unit_text = &after[..unit_len];
            if unit_text.is_empty() {
                return Err(unit_err!(
                    UnitKind::Duration,
                    "duration `{s}` needs a unit (ns, us, ms, s, m, h, d), e.g. `{num}s`"
                ));
            }
            let Some((_, unit)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit_text) else {
                return Err(unit_err!(
                    UnitKind::Duration,
                    "invalid duration unit `{unit_text}` in `{s}`: use ns, us, ms, s, m, h or d"
                ));
            };
            if *unit >= last_unit {
                return Err(unit_err!(UnitKind::Duration, "invalid duration `{s}`: write units from largest to smallest, each once (e.g. `1m30s`)"));
            }
            last_unit = *unit;
            let nanos = scale_decimal(num, *unit)
                .ok_or_else(|| unit_err!(UnitKind::Duration, "invalid duration `{s}`: {usage}"))?;
            total = total
                .checked_add(nanos)
                .ok_or_else(|| unit_err!(UnitKind::Duration, "duration `{s}` is too large"))?;
            rest = &after[unit_len..];
        }
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| unit_err!(UnitKind::Duration, "duration `{s}` is too large"))?;
        Ok(HumanDuration(Duration::new(
            secs,
            (total % 1_000_000_000) as u32,
        )))
    }
}

impl fmt::Display for HumanDuration {
    /// Canonical form: `1h30m`, `1m30s`, `500ms`, `1s500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (name, unit) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ] {
            if nanos >= unit {
                write!(f, "{}{name}", nanos / unit)?;
                nanos %= unit;
            }
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A CPU amount in millicores: `0.5`, `2`, or `"500m"` (like Kubernetes). `1000` = one full CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cpu {
    /// Thousandths of a CPU.
    pub millis: u64,
}

impl Cpu {
    /// The amount as a fraction of CPUs (`0.5`).
    pub fn cpus(self) -> f64 {
        self.millis as f64 / 1000.0
    }
}

impl FromStr for Cpu {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let bad = || {
            unit_err!(UnitKind::Cpu, "invalid CPU amount `{s}`: expected CPUs like `0.5` or `2`, or millicores like `500m`")
        };
        let millis = if let Some(m) = t.strip_suffix('m') {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            m.parse::<u64>().map_err(|_| bad())?
        } else {
            let (num, rest) = split_number(t);
            if num.is_empty() || !rest.is_empty() {
                return Err(bad());
            }
            let (_, frac) = num.split_once('.').unwrap_or((num, ""));
            if frac.len() > 3 && frac[3..].bytes().any(|b| b != b'0') {
                return Err(unit_err!(
                    UnitKind::Cpu,
                    "CPU amount `{s}` is finer than a millicore (0.001)"
                ));
            }
            let v = scale_decimal(num, 1000).ok_or_else(bad)?;
            u64::try_from(v).map_err(|_| bad())?
        };
        Ok(Cpu { millis })
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

impl Serialize for Cpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Cpu;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CPU amount like 0.5 or \"500m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cpu, E> {
                v.checked_mul(1000)
                    .map(|millis| Cpu { millis })
                    .ok_or_else(|| E::custom("CPU amount too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cpu, E> {
                v.to_string().parse().map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cpu, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> u64 {
        s.parse::<ByteSize>().unwrap().0
    }

    #[test]
    fn sizes() {
        assert_eq!(size("0"), 0);
        assert_eq!(size("1048576"), 1_048_576);
        assert_eq!(size("64Mi"), 64 << 20);
        assert_eq!(size("64MiB"), 64 << 20);
        assert_eq!(size("1G"), 1_000_000_000);
        assert_eq!(size("1GB"), 1_000_000_000);
        assert_eq!(size("512k"), 512_000);
        assert_eq!(size("512K"), 512_000);
        assert_eq!(size("512Ki"), 512 * 1024);
        assert_eq!(size("1.5Gi"), 3 << 29);
        assert_eq!(size("0.5Ki"), 512);
        assert_eq!(size("1.0001k"), 1001); // 1000.1 rounded up
        assert_eq!(size("8Ei"), 8 << 60);
        assert_eq!(size("10B"), 10);
    }

    #[test]
    fn size_errors() {
        let err = "64m".parse::<ByteSize>().unwrap_err();
        assert_eq!(err.kind, UnitKind::Size);
        let e = err.to_string();
        assert!(
            e.contains("ambiguous") && e.contains("`64Mi`") && e.contains("`64M`"),
            "{e}"
        );
        let e = "1g".parse::<ByteSize>().unwrap_err().message;
        assert!(e.contains("`1Gi`"), "{e}");
        assert!("64Xi"
            .parse::<ByteSize>()
            .unwrap_err()
            .message
            .contains("invalid size suffix `Xi`"));
        assert!("Mi".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("1.2.3M".parse::<ByteSize>().is_err());
        assert!("16Ei"
            .parse::<ByteSize>()
            .unwrap_err()
            .message
            .contains("too large"));
    }

    #[test]
    fn size_display() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64Mi");
        assert_eq!(ByteSize(1_000_000_000).to_string(), "1000000000");
        assert_eq!(ByteSize(1536).to_string(), "1536");
        assert_eq!(ByteSize(0).to_string(), "0");
        assert_eq!(ByteSize(2048).to_string(), "2Ki");
    }

    fn dur(s: &str) -> Duration {
        s.parse::<HumanDuration>().unwrap().0
    }

    #[test]
    fn durations() {
        assert_eq!(dur("500ms"), Duration::from_millis(500));
        assert_eq!(dur("2s"), Duration::from_secs(2));
        assert_eq!(dur("1m30s"), Duration::from_secs(90));
        assert_eq!(dur("1h"), Duration::from_secs(3600));
        assert_eq!(dur("1h30m"), Duration::from_secs(5400));
        assert_eq!(dur("1.5s"), Duration::from_millis(1500));
        assert_eq!(dur("1d"), Duration::from_secs(86400));
        assert_eq!(dur("250us"), Duration::from_micros(250));
        assert_eq!(dur("250µs"), Duration::from_micros(250));
        assert_eq!(dur("10ns"), Duration::from_nanos(10));
        assert_eq!(dur("0"), Duration::ZERO);
        assert_eq!(dur("0s"), Duration::ZERO);
        assert_eq!(dur("1s500ms"), Duration::from_millis(1500));
    }

    #[test]
    fn duration_errors() {
        let err = "30".parse::<HumanDuration>().unwrap_err();
        assert_eq!(err.kind, UnitKind::Duration);
        let e = err.message;
        assert_eq!(
            e,
            "duration `30` needs a unit (ns, us, ms, s, m, h, d), e.g. `30s`"
        );
        assert!("5x"
            .parse::<HumanDuration>()
            .unwrap_err()
            .message
            .contains("unit `x`"));
        assert!("30s1m"
            .parse::<HumanDuration>()
            .unwrap_err()
            .message
            .contains("largest to smallest"));
        assert!("1s1s".parse::<HumanDuration>().is_err());
        assert!("".parse::<HumanDuration>().is_err());
        assert!("-1s".parse::<HumanDuration>().is_err());
        assert!("s".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn duration_display_round_trips() {
        for s in [
            "0s", "500ms", "2s", "1m30s", "1h", "1h30m", "1s500ms", "26h", "10ns",
        ] {
            assert_eq!(s.parse::<HumanDuration>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn cpus() {
        assert_eq!("0.5".parse::<Cpu>().unwrap().millis, 500);
        assert_eq!("500m".parse::<Cpu>().unwrap().millis, 500);
        assert_eq!("2".parse::<Cpu>().unwrap().millis, 2000);
        assert_eq!("0.25".parse::<Cpu>().unwrap().millis, 250);
        assert_eq!("1.5000".parse::<Cpu>().unwrap().millis, 1500);
        assert!("0.0001"
            .parse::<Cpu>()
            .unwrap_err()
            .message
            .contains("finer than a millicore"));
        assert!("abc".parse::<Cpu>().is_err());
        assert!("m".parse::<Cpu>().is_err());
        assert!("1.5m".parse::<Cpu>().is_err());
        assert_eq!(Cpu { millis: 500 }.to_string(), "500m");
        assert_eq!(Cpu { millis: 2000 }.to_string(), "2");
        assert!((Cpu { millis: 500 }.cpus() - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn json_forms() {
        let c: Cpu = serde_json::from_str("0.5").unwrap();
        assert_eq!(c.millis, 500);
        let c: Cpu = serde_json::from_str("\"250m\"").unwrap();
        assert_eq!(c.millis, 250);
        let b: ByteSize = serde_json::from_str("\"64Mi\"").unwrap();
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            (64u64 << 20).to_string()
        );
        let d: HumanDuration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m30s\"");
    }
}

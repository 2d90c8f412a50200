//! Unix time to Windows FILETIME.
//!
//! A FILETIME counts 100 ns intervals since 1601-01-01 UTC; Unix time counts from 1970-01-01.
//! The gap is 11 644 473 600 s = 116 444 736 000 000 000 intervals.

/// 100 ns intervals between 1601-01-01 and 1970-01-01.
pub const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;

/// A Windows FILETIME value (100 ns ticks since 1601). Signed like `FILE_BASIC_INFO`'s
/// `LARGE_INTEGER` fields; 0 means "leave unchanged" to `SetFileInformationByHandle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct FileTime(pub i64);

impl FileTime {
    /// Converts nanoseconds since the Unix epoch: `ns / 100 + 116444736000000000`.
    ///
    /// Division truncates toward zero, as Go's `windows.NsecToFiletime` does, so pre-1970 times
    /// with sub-100 ns fractions round the same way as the reference implementation.
    pub fn from_unix_nanos(ns: i128) -> Option<FileTime> {
        let ticks = ns / 100 + i128::from(UNIX_EPOCH_AS_FILETIME);
        i64::try_from(ticks).ok().map(FileTime)
    }

    /// Converts whole seconds plus nanoseconds since the Unix epoch.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<FileTime> {
        Self::from_unix_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(
            FileTime::from_unix(0, 0),
            Some(FileTime(116_444_736_000_000_000))
        );
        // 2020-01-01T00:00:00Z = 1577836800 s -> +15778368000000000 ticks.
        assert_eq!(
            FileTime::from_unix(1_577_836_800, 0),
            Some(FileTime(132_223_104_000_000_000))
        );
        // Sub-100ns precision is dropped: 1 s + 123456789 ns -> 11234567 ticks after the epoch.
        assert_eq!(
            FileTime::from_unix(1, 123_456_789),
            Some(FileTime(116_444_736_011_234_567))
        );
        // 1601-01-01 itself is tick 0.
        assert_eq!(FileTime::from_unix(-11_644_473_600, 0), Some(FileTime(0)));
    }
}

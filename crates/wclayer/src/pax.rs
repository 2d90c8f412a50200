//! NTFS metadata carried in PAX extended-header records.
//!
//! Windows layer tars (written by go-winio's `backuptar`, which Docker and containerd use) keep
//! what a POSIX header cannot say in PAX records. The key names below are that de-facto format;
//! nothing else standardises them.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::fileinfo::{FileBasicInfo, FILE_ATTRIBUTE_DIRECTORY};
use crate::filetime::FileTime;

/// Decimal u32 file attributes.
pub const KEY_FILE_ATTRIBUTES: &str = "MSWINDOWS.fileattr";
/// Base64 self-relative security descriptor.
pub const KEY_RAW_SD: &str = "MSWINDOWS.rawsd";
/// Legacy SDDL security descriptor text.
pub const KEY_SDDL: &str = "MSWINDOWS.sd";
/// Present: the symlink entry is a junction (mount point).
pub const KEY_MOUNTPOINT: &str = "MSWINDOWS.mountpoint";
/// Prefix of base64 extended attribute values.
pub const KEY_XATTR_PREFIX: &str = "MSWINDOWS.xattr.";
/// PAX time of creation.
pub const KEY_CREATION_TIME: &str = "LIBARCHIVE.creationtime";

/// A security descriptor as found in the tar: binary already, or SDDL text needing Win32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityDescriptor {
    /// Self-relative binary descriptor, ready for a SECURITY stream.
    Raw(Vec<u8>),
    /// SDDL text; the host converts it (only Windows can).
    Sddl(String),
}

/// Everything NTFS-specific about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfsMeta {
    /// Attributes and the four times.
    pub info: FileBasicInfo,
    /// The descriptor, if any.
    pub security_descriptor: Option<SecurityDescriptor>,
    /// Symlink entries only: junction rather than symbolic link.
    pub mountpoint: bool,
    /// Extended attributes by name; a `BTreeMap` so they are emitted sorted by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Parses a PAX time `[-]secs[.frac]` into nanoseconds since the Unix epoch.
///
/// Digits beyond nanosecond precision are dropped (truncation), as PAX readers commonly do.
pub fn parse_pax_time(text: &str) -> Option<i128> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (secs, frac) = match rest.split_once('.') {
        Some((s, f)) => (s, f),
        None => (rest, ""),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = secs.parse().ok()?;
    let mut nanos: i128 = 0;
    for digit in frac.bytes().chain(std::iter::repeat(b'0')).take(9) {
        nanos = nanos * 10 + i128::from(digit - b'0');
    }
    let total = secs.checked_mul(1_000_000_000)? + nanos;
    Some(if negative { -total } else { total })
}

fn pax_time(entry: &str, pax: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<Option<FileTime>> {
    let Some(raw) = pax.get(key) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| Error::entry(entry, format!("PAX record {key} is not UTF-8")))?;
    let ns = parse_pax_time(text)
        .ok_or_else(|| Error::entry(entry, format!("PAX record {key}={text:?} is not a time")))?;
    FileTime::from_unix_nanos(ns)
        .map(Some)
        .ok_or_else(|| Error::entry(entry, format!("PAX record {key}={text:?} is out of range")))
}

fn decode_b64(entry: &str, key: &str, raw: &[u8]) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|e| Error::entry(entry, format!("PAX record {key} is not valid base64: {e}")))
}

/// Reads the NTFS metadata of one entry.
///
/// * `header_times`: (mtime, atime, ctime) from the tar header in whole seconds, atime/ctime
///   `None` when the header format has no such field (ustar) or leaves it 0.
/// * Times: PAX `mtime`/`atime`/`ctime` win over the header; creation time is
///   `LIBARCHIVE.creationtime`, else the last write time. A missing access or change time also
///   falls back to the last write time — a defined value instead of Go's undefined zero time.
/// * Attributes: `MSWINDOWS.fileattr`, else 0 for files and `FILE_ATTRIBUTE_DIRECTORY` for dirs.
pub fn read_meta(
    entry: &str,
    is_dir: bool,
    header_times: (u64, Option<u64>, Option<u64>),
    pax: &BTreeMap<String, Vec<u8>>,
) -> Result<NtfsMeta> {
    let secs_to_ft = |what: &str, secs: u64| {
        i64::try_from(secs)
            .ok()
            .and_then(|s| FileTime::from_unix(s, 0))
            .ok_or_else(|| Error::entry(entry, format!("header {what} {secs} is out of range")))
    };
    let last_write = match pax_time(entry, pax, "mtime")? {
        Some(t) => t,
        None => secs_to_ft("mtime", header_times.0)?,
    };
    let last_access = match pax_time(entry, pax, "atime")? {
        Some(t) => t,
        None => match header_times.1 {
            Some(s) => secs_to_ft("atime", s)?,
            None => last_write,
        },
    };
    let change = match pax_time(entry, pax, "ctime")? {
        Some(t) => t,
        None => match header_times.2 {
            Some(s) => secs_to_ft("ctime", s)?,
            None => last_write,
        },
    };
    let creation = pax_time(entry, pax, KEY_CREATION_TIME)?.unwrap_or(last_write);

    let file_attributes = match pax.get(KEY_FILE_ATTRIBUTES) {
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| {
                Error::entry(
                    entry,
                    format!(
                        "PAX record {KEY_FILE_ATTRIBUTES}={:?} is not a decimal u32",
                        String::from_utf8_lossy(raw)
                    ),
                )
            })?,
        None if is_dir => FILE_ATTRIBUTE_DIRECTORY,
        None => 0,
    };

    let security_descriptor = if let Some(raw) = pax.get(KEY_RAW_SD) {
        Some(SecurityDescriptor::Raw(decode_b64(entry, KEY_RAW_SD, raw)?))
    } else if let Some(raw) = pax.get(KEY_SDDL) {
        let text = String::from_utf8(raw.clone())
            .map_err(|_| Error::entry(entry, format!("PAX record {KEY_SDDL} is not UTF-8")))?;
        Some(SecurityDescriptor::Sddl(text))
    } else {
        None
    };

    let mut xattrs = BTreeMap::new();
    for (key, raw) in pax {
        if let Some(name) = key.strip_prefix(KEY_XATTR_PREFIX) {
            xattrs.insert(name.to_string(), decode_b64(entry, key, raw)?);
        }
    }

    Ok(NtfsMeta {
        info: FileBasicInfo {
            creation_time: creation,
            last_access_time: last_access,
            last_write_time: last_write,
            change_time: change,
            file_attributes,
        },
        security_descriptor,
        mountpoint: pax.contains_key(KEY_MOUNTPOINT),
        xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("0"), Some(0));
        assert_eq!(parse_pax_time("1.5"), Some(1_500_000_000));
        assert_eq!(parse_pax_time("-1.25"), Some(-1_250_000_000));
        // Precision past nanoseconds is truncated.
        assert_eq!(parse_pax_time("2.1234567891"), Some(2_123_456_789));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time("1.x"), None);
        assert_eq!(parse_pax_time(""), None);
    }

    #[test]
    fn defaults_and_overrides() {
        // A directory with no records: attributes 0x10, all four times = header mtime.
        let m = read_meta("Files/d/", true, (10, None, None), &BTreeMap::new()).unwrap();
        assert_eq!(m.info.file_attributes, 0x10);
        let t10 = FileTime(116_444_736_000_000_000 + 10 * 10_000_000);
        assert_eq!(m.info.creation_time, t10);
        assert_eq!(m.info.last_access_time, t10);
        assert_eq!(m.info.change_time, t10);

        // Every record set: fileattr 32 (ARCHIVE), creation 1 s, mtime 2.5 s, atime 3, ctime 4.
        let r = recs(&[
            (KEY_FILE_ATTRIBUTES, "32"),
            (KEY_CREATION_TIME, "1"),
            ("mtime", "2.5"),
            ("atime", "3"),
            ("ctime", "4"),
            (KEY_RAW_SD, "AQIDBA=="),
            ("MSWINDOWS.xattr.b", "Yg=="),
            ("MSWINDOWS.xattr.a", "YQ=="),
            (KEY_MOUNTPOINT, "1"),
        ]);
        let m = read_meta("Files/f", false, (99, Some(98), Some(97)), &r).unwrap();
        let base = 116_444_736_000_000_000;
        assert_eq!(m.info.file_attributes, 32);
        assert_eq!(m.info.creation_time, FileTime(base + 10_000_000));
        assert_eq!(m.info.last_write_time, FileTime(base + 25_000_000));
        assert_eq!(m.info.last_access_time, FileTime(base + 30_000_000));
        assert_eq!(m.info.change_time, FileTime(base + 40_000_000));
        assert_eq!(
            m.security_descriptor,
            Some(SecurityDescriptor::Raw(vec![1, 2, 3, 4]))
        );
        assert!(m.mountpoint);
        let names: Vec<_> = m.xattrs.keys().cloned().collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_records_name_the_entry() {
        let err = read_meta(
            "Files/x",
            false,
            (0, None, None),
            &recs(&[(KEY_FILE_ATTRIBUTES, "-1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("Files/x") && err.contains("MSWINDOWS.fileattr"),
            "{err}"
        );
        let err = read_meta(
            "Files/y",
            false,
            (0, None, None),
            &recs(&[(KEY_RAW_SD, "!!")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Files/y") && err.contains("base64"), "{err}");
    }
}

//! Reparse buffers for symbolic links and junctions (`REPARSE_DATA_BUFFER`).
//!
//! Layout, little-endian: u32 tag, u16 data length, u16 reserved (0), u16 substitute-name
//! offset, u16 substitute-name length, u16 print-name offset, u16 print-name length, then — for
//! symlinks only — u32 flags (1 = relative), then the substitute name and the print name, both
//! UTF-16LE with a NUL each. Lengths exclude the NUL; offsets are relative to the start of the
//! name area; the data length counts everything after the first 8 bytes.

use crate::error::{Error, Result};

/// `IO_REPARSE_TAG_SYMLINK`.
pub const TAG_SYMLINK: u32 = 0xA000_000C;
/// `IO_REPARSE_TAG_MOUNT_POINT` (junction).
pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// `SYMLINK_FLAG_RELATIVE`.
pub const SYMLINK_FLAG_RELATIVE: u32 = 1;

fn is_drive_path(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// The NT (substitute) form of a target and whether it is relative.
///
/// `\\?\X` → `\??\X`; `\\server\share` → `\??\UNC\server\share`; `C:...` → `\??\C:...`;
/// anything else (including `\rooted` without a drive) stays as it is and counts as relative.
pub fn nt_target(print: &str) -> (String, bool) {
    if let Some(rest) = print.strip_prefix(r"\\?\") {
        (format!(r"\??\{rest}"), false)
    } else if let Some(rest) = print.strip_prefix(r"\\") {
        (format!(r"\??\UNC\{rest}"), false)
    } else if is_drive_path(print) {
        (format!(r"\??\{print}"), false)
    } else {
        (print.to_string(), true)
    }
}

/// Encodes the reparse buffer for a tar link target.
///
/// `link_target` is the tar `linkname`; forward slashes become backslashes first, as the
/// target is a Windows path. `mount_point` selects a junction.
pub fn encode(entry: &str, link_target: &str, mount_point: bool) -> Result<Vec<u8>> {
    let print = link_target.replace('/', "\\");
    let (subst, relative) = nt_target(&print);
    let subst16: Vec<u16> = subst.encode_utf16().collect();
    let print16: Vec<u16> = print.encode_utf16().collect();
    // Header fields after tag/length/reserved: 4 x u16 = 8 bytes; names each carry a NUL.
    let names_len = (subst16.len() + 1 + print16.len() + 1) * 2;
    let data_len = 8 + names_len + if mount_point { 0 } else { 4 };
    let too_long = || {
        Error::entry(
            entry,
            format!("link target {link_target:?} is too long for a reparse point"),
        )
    };
    let data_len16 = u16::try_from(data_len).map_err(|_| too_long())?;
    let subst_len = u16::try_from(subst16.len() * 2).map_err(|_| too_long())?;
    let print_len = u16::try_from(print16.len() * 2).map_err(|_| too_long())?;

    let mut out = Vec::with_capacity(8 + data_len);
    out.extend_from_slice(
        &(if mount_point {
            TAG_MOUNT_POINT
        } else {
            TAG_SYMLINK
        })
        .to_le_bytes(),
    );
    out.extend_from_slice(&data_len16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // substitute name offset
    out.extend_from_slice(&subst_len.to_le_bytes());
    out.extend_from_slice(&(subst_len + 2).to_le_bytes()); // print name offset: after subst + NUL
    out.extend_from_slice(&print_len.to_le_bytes());
    if !mount_point {
        let flags = if relative { SYMLINK_FLAG_RELATIVE } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
    }
    for unit in subst16.iter().chain(&[0]).chain(print16.iter()).chain(&[0]) {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16z(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn relative_symlink() {
        // Target "a/b" -> print "a\b" (3 units = 6 bytes), relative, substitute = print.
        // Data length = 8 + (6+2) + (6+2) + 4 flags = 28 = 0x1c.
        let got = encode("Files/l", "a/b", false).unwrap();
        let mut want = vec![0x0c, 0, 0, 0xa0, 28, 0, 0, 0];
        want.extend_from_slice(&[0, 0, 6, 0, 8, 0, 6, 0]); // subst off/len, print off/len
        want.extend_from_slice(&[1, 0, 0, 0]); // SYMLINK_FLAG_RELATIVE
        want.extend(utf16z("a\\b"));
        want.extend(utf16z("a\\b"));
        assert_eq!(got, want);
        assert_eq!(got.len(), 8 + 28);
    }

    #[test]
    fn absolute_symlink_and_junction() {
        // "C:\x" (4 units) -> substitute "\??\C:\x" (8 units = 16 bytes), flags 0.
        // Data length = 8 + 18 + 10 + 4 = 40.
        let got = encode("Files/l", "C:\\x", false).unwrap();
        assert_eq!(&got[..8], &[0x0c, 0, 0, 0xa0, 40, 0, 0, 0]);
        assert_eq!(&got[8..16], &[0, 0, 16, 0, 18, 0, 8, 0]);
        assert_eq!(&got[16..20], &[0, 0, 0, 0]);
        assert_eq!(
            &got[20..],
            [utf16z("\\??\\C:\\x"), utf16z("C:\\x")].concat()
        );

        // Junction: tag 0xA0000003, no flags field: data length = 8 + 18 + 10 = 36.
        let got = encode("Files/j", "C:\\x", true).unwrap();
        assert_eq!(&got[..8], &[3, 0, 0, 0xa0, 36, 0, 0, 0]);
        assert_eq!(&got[8..16], &[0, 0, 16, 0, 18, 0, 8, 0]);
        assert_eq!(
            &got[16..],
            [utf16z("\\??\\C:\\x"), utf16z("C:\\x")].concat()
        );
    }

    #[test]
    fn nt_forms() {
        assert_eq!(
            nt_target(r"\\srv\share\f"),
            (r"\??\UNC\srv\share\f".into(), false)
        );
        assert_eq!(nt_target(r"\\?\C:\f"), (r"\??\C:\f".into(), false));
        assert_eq!(nt_target(r"\rooted"), (r"\rooted".into(), true));
    }

    #[test]
    fn overlong_target_is_an_error() {
        let long = "a".repeat(40_000);
        assert!(encode("Files/l", &long, false).is_err());
    }
}

//! Layer-relative names and Windows extended-length (`\\?\`) paths.
//!
//! Tar names are `/`-separated and relative to the layer (`Files/Windows/System32/...`). Windows
//! limits ordinary paths to 260 characters; the `\\?\` prefix lifts that to 32767 UTF-16 units
//! and turns off `/` translation, so we build those paths ourselves. Kept portable so the rules
//! are tested on Linux.

use crate::error::{Error, Result};

/// Longest path the Win32 wide-character APIs accept, in UTF-16 units.
pub const MAX_EXTENDED_PATH: usize = 32_767;

/// Turns a tar entry name into a clean layer-relative name: `/`-separated, no leading `./` or
/// `/`, no trailing `/`, no empty or `.` components. `..`, backslashes and NULs are refused,
/// as is a name too long for Windows.
pub fn clean_entry_name(raw: &[u8]) -> Result<String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| Error::entry(&shown, "name is not UTF-8"))?;
    if text.contains('\\') || text.contains('\0') {
        return Err(Error::entry(&shown, "name contains a backslash or NUL"));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Error::entry(&shown, "name contains '..'")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(Error::entry(&shown, "empty name"));
    }
    let clean = parts.join("/");
    if clean.encode_utf16().count() > MAX_EXTENDED_PATH {
        return Err(Error::entry(
            &shown,
            format!("name is longer than {MAX_EXTENDED_PATH} UTF-16 units"),
        ));
    }
    Ok(clean)
}

/// Whether `name` is `prefix` itself or lies below it (component-wise, case-sensitive).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name == prefix
        || (name.len() > prefix.len()
            && name.starts_with(prefix)
            && name.as_bytes()[prefix.len()] == b'/')
}

/// The parent of a layer-relative name (`""` for a top-level name).
pub fn parent(name: &str) -> &str {
    name.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// Joins an absolute Windows root directory and a layer-relative name into an extended-length
/// path (the prefix disables normalisation, so a relative root would be wrong):
/// `C:\layers\x` + `Files/a` → `\\?\C:\layers\x\Files\a`; `\\srv\share` roots become
/// `\\?\UNC\srv\share\...`; roots already extended stay so. Errors past 32767 units.
pub fn extended_path(root: &str, rel: &str) -> Result<String> {
    let root = root.replace('/', "\\");
    let root = root.trim_end_matches('\\');
    let prefixed = if root.starts_with(r"\\?\") {
        root.to_string()
    } else if let Some(unc) = root.strip_prefix(r"\\") {
        format!(r"\\?\UNC\{unc}")
    } else {
        format!(r"\\?\{root}")
    };
    let full = if rel.is_empty() {
        prefixed
    } else {
        format!("{prefixed}\\{}", rel.replace('/', "\\"))
    };
    if full.encode_utf16().count() > MAX_EXTENDED_PATH {
        return Err(Error::entry(
            rel,
            format!("path under {root} is longer than {MAX_EXTENDED_PATH} UTF-16 units"),
        ));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_entry_name(b"./Files/a/").unwrap(), "Files/a");
        assert_eq!(clean_entry_name(b"/Files//b").unwrap(), "Files/b");
        assert!(clean_entry_name(b"Files/../x").is_err());
        assert!(clean_entry_name(b"Files\\x").is_err());
        assert!(clean_entry_name(b"./").is_err());
        assert!(clean_entry_name(&[b'a', 0xff]).is_err());
        let long = format!("Files/{}", "x".repeat(MAX_EXTENDED_PATH));
        assert!(clean_entry_name(long.as_bytes()).is_err());
    }

    #[test]
    fn prefixes() {
        assert!(has_prefix("Files/a", "Files"));
        assert!(has_prefix("Files", "Files"));
        assert!(!has_prefix("Filesx/a", "Files"));
        assert!(!has_prefix("files/a", "Files"));
        assert_eq!(parent("Files/a/b"), "Files/a");
        assert_eq!(parent("Files"), "");
    }

    #[test]
    fn extended_paths() {
        assert_eq!(
            extended_path(r"C:\layers\l1\", "Files/a b/c").unwrap(),
            r"\\?\C:\layers\l1\Files\a b\c"
        );
        assert_eq!(
            extended_path(r"\\srv\share\l", "Files/x").unwrap(),
            r"\\?\UNC\srv\share\l\Files\x"
        );
        assert_eq!(extended_path(r"\\?\D:\l", "").unwrap(), r"\\?\D:\l");
        // A 300-character name is fine with the prefix (beyond MAX_PATH = 260) ...
        let long = format!("Files/{}", "d/".repeat(150));
        let p = extended_path(r"C:\l", long.trim_end_matches('/')).unwrap();
        assert!(p.len() > 300 && p.starts_with(r"\\?\C:\l\Files\d\d"));
        // ... but not past 32767 UTF-16 units.
        assert!(extended_path(r"C:\l", &"x".repeat(MAX_EXTENDED_PATH)).is_err());
    }
}

//! Extended attribute buffers (`FILE_FULL_EA_INFORMATION` chains), as the EA backup stream holds.
//!
//! Per attribute, little-endian: u32 offset of the next entry (0 on the last), u8 flags,
//! u8 name length, u16 value length, the name bytes, a NUL, the value, then zero padding to a
//! multiple of 4 — the last entry is padded too.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Encodes the attributes in name order (the map is sorted), flags 0 as tar carries none.
pub fn encode(entry: &str, attrs: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let count = attrs.len();
    for (i, (name, value)) in attrs.iter().enumerate() {
        let name_len = u8::try_from(name.len()).map_err(|_| {
            Error::entry(
                entry,
                format!("extended attribute name {name:?} is longer than 255 bytes"),
            )
        })?;
        let value_len = u16::try_from(value.len()).map_err(|_| {
            Error::entry(
                entry,
                format!(
                    "extended attribute {name:?} value is {} bytes, more than 65535",
                    value.len()
                ),
            )
        })?;
        let size = 8 + name.len() + 1 + value.len();
        let padded = (size + 3) & !3;
        let next = if i + 1 == count { 0 } else { padded as u32 };
        out.extend_from_slice(&next.to_le_bytes());
        out.push(0);
        out.push(name_len);
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.resize(out.len() + (padded - size), 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_attributes_sorted_and_padded() {
        // Inserted out of order; emitted "ab" then "c".
        let mut m = BTreeMap::new();
        m.insert("c".to_string(), vec![9]);
        m.insert("ab".to_string(), b"xyz".to_vec());
        let got = encode("Files/f", &m).unwrap();
        // "ab": 8 + 2 + 1 + 3 = 14 -> padded 16, next offset 16.
        // "c":  8 + 1 + 1 + 1 = 11 -> padded 12, next offset 0 (last), still padded.
        let want: Vec<u8> = [
            &[16, 0, 0, 0, 0, 2, 3, 0][..],
            b"ab\0xyz",
            &[0, 0],
            &[0, 0, 0, 0, 0, 1, 1, 0],
            b"c\0",
            &[9, 0],
        ]
        .concat();
        assert_eq!(got, want);
        assert_eq!(got.len(), 28);
    }

    #[test]
    fn limits() {
        let mut m = BTreeMap::new();
        m.insert("n".repeat(256), vec![]);
        assert!(encode("Files/f", &m)
            .unwrap_err()
            .to_string()
            .contains("255"));
        let mut m = BTreeMap::new();
        m.insert("n".to_string(), vec![0; 65536]);
        assert!(encode("Files/f", &m)
            .unwrap_err()
            .to_string()
            .contains("65535"));
        let mut m = BTreeMap::new();
        m.insert("n".repeat(255), vec![0; 65535]);
        assert!(encode("Files/f", &m).is_ok());
    }
}

//! Test helpers: layer tars built in code with PAX records, and small byte builders.
#![allow(dead_code)]

use std::path::Path;

use base64::Engine as _;

/// The mtime every helper entry gets: 1_600_000_000 s after the Unix epoch.
pub const MTIME: u64 = 1_600_000_000;
/// Its FILETIME: 1.6e9 s * 1e7 ticks/s + 116444736000000000.
pub const MTIME_FT: i64 = 132_444_736_000_000_000;

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A layer tar under construction.
pub struct LayerTar {
    b: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h
    }

    fn pax(&mut self, pax: &[(&str, &str)]) {
        if !pax.is_empty() {
            self.b
                .append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_bytes())))
                .unwrap();
        }
    }

    pub fn dir(&mut self, name: &str, pax: &[(&str, &str)]) -> &mut Self {
        self.pax(pax);
        let mut h = Self::header(tar::EntryType::Directory, 0);
        self.b.append_data(&mut h, name, &[][..]).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8], pax: &[(&str, &str)]) -> &mut Self {
        self.pax(pax);
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str, pax: &[(&str, &str)]) -> &mut Self {
        self.pax(pax);
        let mut h = Self::header(tar::EntryType::Symlink, 0);
        self.b.append_link(&mut h, name, target).unwrap();
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Link, 0);
        self.b.append_link(&mut h, name, target).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A WIN32_STREAM_ID header: id, attributes 0, size, name size, UTF-16LE name.
pub fn stream_header(id: u32, size: u64, name: &str) -> Vec<u8> {
    let name16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&(name16.len() as u32).to_le_bytes());
    v.extend_from_slice(&name16);
    v
}

/// UTF-16LE with a trailing NUL.
pub fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

pub fn manifest(layer: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(layer.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

//! Test helpers: layer tars built in code with PAX records, and small byte builders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

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
    zlayer_image::Digest::of_bytes(data).to_string()
}

pub struct Layer {
    pub media_type: &'static str,
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub urls: Vec<String>,
    /// Leave the blob out of the layout (a foreign layer).
    pub omit: bool,
}

pub fn layer(media_type: &'static str, tar: Vec<u8>) -> Layer {
    let blob = match media_type {
        m if m.ends_with("gzip") => gzip(&tar),
        m if m.ends_with("zstd") => zstd::encode_all(&tar[..], 3).unwrap(),
        _ => tar.clone(),
    };
    Layer {
        media_type,
        blob,
        diff_id: sha256(&tar),
        urls: vec![],
        omit: false,
    }
}

pub fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

/// Writes an OCI layout with one image tagged "v1"; returns its directory.
pub fn layout(dir: &Path, layers: &[Layer]) -> PathBuf {
    let root = dir.join("layout");
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "windows",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(&root, &config);
    let mut descs = Vec::new();
    for l in layers {
        let digest = sha256(&l.blob);
        if !l.omit {
            write_blob(&root, &l.blob);
        }
        let mut d =
            serde_json::json!({"mediaType": l.media_type, "digest": digest, "size": l.blob.len()});
        if !l.urls.is_empty() {
            d["urls"] = serde_json::json!(l.urls);
        }
        descs.push(d);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = write_blob(&root, &manifest);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    root
}

/// Serves `body` at any path once per connection; `/missing` answers 404.
pub fn serve(body: Vec<u8>, conns: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(conns) {
            let mut s = stream.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&req);
            if head.starts_with("GET /missing") {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            } else {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            }
        }
    });
    format!("http://{addr}")
}

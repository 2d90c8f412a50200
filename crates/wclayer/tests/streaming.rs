//! Bounded memory: a large layer, generated on the fly and gzip-compressed through a bounded
//! in-process pipe, goes through the whole pipeline (digest, inflate, DiffID, convert, import)
//! while the process's peak RSS (VmHWM) grows by less than 64 MB.
//!
//! Size: `WCLAYER_STREAM_MIB` (default 256 MiB so the suite stays quick in debug builds);
//! `bench/wclayer-rss.sh` runs it with 1 GiB. Own test binary, one test, so no other test's
//! allocations disturb the high-water mark.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver};

use zlayer_wclayer::source::{BlobFetch, LayerSource};
use zlayer_wclayer::{
    unpack_windows_image_with, ConfigDescriptor, LinuxHost, RegistryAuth, ResolvedLayerDescriptor,
    WindowsImage,
};

const FILES: u64 = 8;

/// 64 KiB of file content, repeated (a byte ramp modulo the prime 251, so chunks differ from
/// block-aligned zeroes).
static PATTERN: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| (0..64 * 1024).map(|i| (i % 251) as u8).collect());

/// A deterministic layer tar produced piece by piece: `Files/`, then `FILES` files of
/// `file_size` bytes of a repeating pattern, then the end-of-archive marker.
struct TarGen {
    file_size: u64,
    next_file: u64,
    /// Bytes ready to hand out.
    pending: Vec<u8>,
    pos: usize,
    /// Data bytes of the current file still to produce.
    data_left: u64,
    /// Zero padding after the current file's data.
    pad: usize,
    done: bool,
}

impl TarGen {
    fn new(total: u64) -> Self {
        let mut g = TarGen {
            file_size: total / FILES,
            next_file: 0,
            pending: Vec::new(),
            pos: 0,
            data_left: 0,
            pad: 0,
            done: false,
        };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path("Files/").unwrap();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(common::MTIME);
        h.set_cksum();
        g.pending.extend_from_slice(h.as_bytes());
        g
    }

    fn refill(&mut self) {
        self.pending.clear();
        self.pos = 0;
        if self.data_left > 0 {
            let n = self.data_left.min(PATTERN.len() as u64) as usize;
            self.pending.extend_from_slice(&PATTERN[..n]);
            self.data_left -= n as u64;
        } else if self.pad > 0 {
            self.pending.resize(self.pad, 0);
            self.pad = 0;
        } else if self.next_file < FILES {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path(format!("Files/big{}.bin", self.next_file))
                .unwrap();
            h.set_size(self.file_size);
            h.set_mode(0o644);
            h.set_mtime(common::MTIME);
            h.set_cksum();
            self.pending.extend_from_slice(h.as_bytes());
            self.next_file += 1;
            self.data_left = self.file_size;
            self.pad = ((512 - self.file_size % 512) % 512) as usize;
        } else if !self.done {
            self.pending.resize(1024, 0);
            self.done = true;
        }
    }
}

impl Read for TarGen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.pending.len() {
            self.refill();
            if self.pending.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reading end of a bounded chunk pipe fed by a producer thread.
struct PipeReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writer half: sends chunks down the channel (blocks when 4 are in flight).
struct PipeWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl Write for PipeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The gzip-compressed generated layer, streamed through the pipe by a thread.
fn compressed_stream(total: u64) -> PipeReader {
    let (tx, rx) = sync_channel(4);
    std::thread::spawn(move || {
        let w = std::io::BufWriter::with_capacity(64 * 1024, PipeWriter(tx));
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        let _ = std::io::copy(&mut TarGen::new(total), &mut gz);
        let _ = gz.finish().and_then(|mut w| w.flush());
    });
    PipeReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    }
}

/// Hashes a stream without keeping it.
fn digest_of(mut r: impl Read) -> (String, u64) {
    let mut h = zlayer_image::digest::DigestHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    let n = h.len();
    (h.finish().to_string(), n)
}

struct GenSource {
    total: u64,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
}

impl LayerSource for GenSource {
    fn fetch_blob(
        &self,
        _image: &str,
        _auth: &RegistryAuth,
        digest: &str,
        _size: u64,
    ) -> zlayer_wclayer::Result<BlobFetch> {
        if digest == self.config_digest {
            return Ok(BlobFetch::Found(Box::new(std::io::Cursor::new(
                self.config.clone(),
            ))));
        }
        assert_eq!(digest, self.layer_digest);
        Ok(BlobFetch::Found(Box::new(compressed_stream(self.total))))
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn large_layer_converts_in_bounded_memory() {
    let mib: u64 = std::env::var("WCLAYER_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;

    // First pass: digests of the compressed blob and of the tar (the DiffID), streamed too.
    let (diff_id, tar_len) = digest_of(TarGen::new(total));
    let (layer_digest, blob_len) = digest_of(compressed_stream(total));
    let config = serde_json::to_vec(&serde_json::json!({
        "os": "windows", "architecture": "amd64",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let config_digest = common::sha256(&config);
    let source = GenSource {
        total,
        layer_digest: layer_digest.clone(),
        config: config.clone(),
        config_digest: config_digest.clone(),
    };
    let image = WindowsImage {
        reference: "generated".into(),
        config: ConfigDescriptor {
            digest: config_digest,
            size: config.len() as u64,
        },
    };
    let layers = [ResolvedLayerDescriptor {
        digest: layer_digest,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        size: blob_len,
        urls: vec![],
    }];
    let tmp = tempfile::tempdir().unwrap();

    // Reset the high-water mark to the current RSS (Linux: write "5" to clear_refs), so the
    // first pass above does not count.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = vm_hwm_kib();
    let started = std::time::Instant::now();
    let out = unpack_windows_image_with(
        &LinuxHost::new(),
        &source,
        &image,
        &RegistryAuth::Anonymous,
        &layers,
        tmp.path(),
    )
    .unwrap();
    let elapsed = started.elapsed();
    let growth_mib = (vm_hwm_kib().saturating_sub(before)) as f64 / 1024.0;
    println!(
        "wclayer streaming: {mib} MiB layer ({tar_len} tar bytes, {blob_len} gzip bytes) in {:.1}s, \
         VmHWM grew {growth_mib:.1} MiB",
        elapsed.as_secs_f64()
    );
    let base = &out.chain[0];
    let f = std::fs::metadata(base.join("Files/big0.bin")).unwrap();
    assert_eq!(f.len(), total / FILES);
    assert!(growth_mib < 64.0, "peak RSS grew by {growth_mib:.1} MiB");
}

//! Shared parts of the pull tests: a real registry with fixtures pushed, a TCP proxy that can
//! drop or throttle connections, and store checks.

#![allow(dead_code)]

pub mod bad_registry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use zlayer_image::pull::{pull, PullError, PullEvent, PullOptions, PulledImage};
use zlayer_image::registry::{Platform, RegistryClient, RegistryConfig};
use zlayer_image::{Digest, ImageStore, Reference};

/// A registry config that ignores the user's docker login and retries quickly.
pub fn test_config() -> RegistryConfig {
    RegistryConfig {
        ignore_docker_config: true,
        retry_base_delay_ms: 20,
        ..RegistryConfig::default()
    }
}

pub fn stores(root: &Path) -> ImageStore {
    ImageStore::open(root).unwrap()
}

/// Pulls and collects the events.
pub async fn pull_collect(
    root: &Path,
    config: RegistryConfig,
    reference: &str,
    platform: &Platform,
) -> (Result<PulledImage, PullError>, Vec<PullEvent>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = RegistryClient::new(config).unwrap();
    let r = pull(
        &stores(root),
        &client,
        &Reference::parse(reference).unwrap(),
        platform,
        &PullOptions::default(),
        move |e| sink.lock().unwrap().push(e),
    )
    .await;
    let ev = events.lock().unwrap().clone();
    (r, ev)
}

/// Every blob under `root/content/blobs` hashes to its name: nothing partial is visible.
pub fn assert_store_consistent(root: &Path) {
    let blobs = root.join("content/blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&blobs) else {
        return;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of_bytes(&data).hex(),
            name,
            "blob {} does not match its name",
            e.path().display()
        );
    }
}

/// Files left in `root/content/ingest` (partial downloads), excluding lock files.
pub fn ingest_files(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("content/ingest")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect()
}

/// How the proxy misbehaves.
#[derive(Clone, Copy, Default)]
pub struct ProxyMode {
    /// Cut a connection after this many bytes from the registry...
    pub drop_after: Option<u64>,
    /// ...this many times in total; afterwards connections pass through.
    pub max_drops: u64,
    /// Limit registry->client throughput to about this many bytes per second.
    pub rate: Option<u64>,
    /// Answer the first this-many connections with `503 Service Unavailable`.
    pub fail_first: u64,
}

/// A TCP proxy on a loopback port in front of `upstream`.
pub struct FlakyProxy {
    pub addr: SocketAddr,
    pub drops: Arc<AtomicU64>,
    /// Bytes relayed from the registry to clients (headers included).
    pub relayed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(upstream: SocketAddr, mode: ProxyMode) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drops = Arc::new(AtomicU64::new(0));
        let relayed = Arc::new(AtomicU64::new(0));
        let d = drops.clone();
        let r = relayed.clone();
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (d, r) = (d.clone(), r.clone());
                if accepted.fetch_add(1, Ordering::SeqCst) < mode.fail_first {
                    tokio::spawn(async move {
                        let mut client = client;
                        let mut buf = [0u8; 4096];
                        let _ = client.read(&mut buf).await;
                        let _ = client
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        let _ = client.shutdown().await;
                    });
                    continue;
                }
                tokio::spawn(async move {
                    let _ = proxy_conn(client, upstream, mode, d, r).await;
                });
            }
        });
        FlakyProxy {
            addr,
            drops,
            relayed,
            task,
        }
    }

    /// `127.0.0.1:PORT`, usable as a reference's registry (loopback: plain HTTP).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_conn(
    client: TcpStream,
    upstream: SocketAddr,
    mode: ProxyMode,
    drops: Arc<AtomicU64>,
    relayed: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = sr.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if let Some(limit) = mode.drop_after {
            if sent + n as u64 > limit {
                let prev = drops.fetch_add(1, Ordering::SeqCst);
                if prev < mode.max_drops {
                    // Send part of the chunk, then vanish mid-body.
                    let part = (limit - sent) as usize;
                    let _ = cw.write_all(&buf[..part]).await;
                    relayed.fetch_add(part as u64, Ordering::SeqCst);
                    up.abort();
                    return Ok(());
                }
                drops.fetch_sub(1, Ordering::SeqCst);
            }
        }
        cw.write_all(&buf[..n]).await?;
        relayed.fetch_add(n as u64, Ordering::SeqCst);
        sent += n as u64;
        if let Some(rate) = mode.rate {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    }
    let _ = cw.shutdown().await;
    up.abort();
    Ok(())
}

/// The directory where `docker-registry` stores blob `digest` (to corrupt it on purpose).
pub fn registry_blob_data(registry_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry_dir
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

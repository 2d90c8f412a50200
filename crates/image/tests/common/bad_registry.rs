//! `BadRegistry`: a registry of the test's own on a loopback port that answers each request
//! the way its route says — honestly, or with an endless body, a lying `Content-Length`, a
//! drip, a stall, or no answer at all. Hand-written on raw TCP because the point is to
//! misbehave in ways real servers refuse to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use zlayer_image::Digest;

/// How to answer a request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200 with this body and its length (and `Content-Type`).
    Body(&'static str, Vec<u8>),
    /// 200 (or `status`), no `Content-Length`, zeros until the client goes away.
    Endless { status: u16 },
    /// 200 declaring `Content-Length: declared`, then zeros until the client goes away.
    Declared(u64),
    /// 200 with `Content-Length: len`, one byte every `every`.
    Drip { len: u64, every: Duration },
    /// 200 with the length of `body`, its first `send` bytes, then silence (connection open).
    Stall { body: Vec<u8>, send: usize },
    /// Reads the request and never answers.
    NoHeaders,
    /// 401 with a bearer challenge whose realm is this server's `/token`.
    Challenge,
}

type Routes = Vec<(String, Answer)>;

/// The server; stops on drop.
pub struct BadRegistry {
    pub addr: SocketAddr,
    routes: Arc<Mutex<Routes>>,
    /// Body bytes written to clients so far.
    pub sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BadRegistry {
    pub async fn start() -> BadRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let (r, s) = (routes.clone(), sent.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (r, s) = (r.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, addr, r, s).await;
                });
            }
        });
        BadRegistry {
            addr,
            routes,
            sent,
            task,
        }
    }

    /// `127.0.0.1:PORT`, usable as a reference's registry (loopback: plain HTTP).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answers requests whose path contains `path_contains` with `answer` (first match wins).
    pub fn route(&self, path_contains: &str, answer: Answer) {
        self.routes
            .lock()
            .unwrap()
            .push((path_contains.to_string(), answer));
    }

    /// Like [`Self::route`], but ahead of every route added before.
    pub fn route_first(&self, path_contains: &str, answer: Answer) {
        self.routes
            .lock()
            .unwrap()
            .insert(0, (path_contains.to_string(), answer));
    }

    /// Routes for an honest single-layer image `repo:tag` whose layer is `layer` (a gzip
    /// tar); returns the layer's digest. Add misbehaving routes first to override parts.
    pub fn honest_image(&self, repo: &str, tag: &str, layer: Vec<u8>, diff_id: &Digest) -> Digest {
        let layer_digest = Digest::of_bytes(&layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        }))
        .unwrap();
        let config_digest = Digest::of_bytes(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest.to_string(),
                "size": layer.len(),
            }],
        }))
        .unwrap();
        self.route(
            &format!("/v2/{repo}/manifests/{tag}"),
            Answer::Body("application/vnd.oci.image.manifest.v1+json", manifest),
        );
        self.route(
            &format!("/blobs/{config_digest}"),
            Answer::Body("application/octet-stream", config),
        );
        self.route(
            &format!("/blobs/{layer_digest}"),
            Answer::Body("application/octet-stream", layer),
        );
        layer_digest
    }
}

impl Drop for BadRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut conn: TcpStream,
    own: SocketAddr,
    routes: Arc<Mutex<Routes>>,
    sent: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 64 << 10 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let answer = routes
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| path.contains(p.as_str()))
        .map(|(_, a)| a.clone());
    let zeros = vec![0u8; 64 << 10];
    match answer {
        None => {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 55\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"NAME_UNKNOWN\",\"message\":\"no route\"}]}").await?;
        }
        Some(Answer::Body(content_type, body)) => {
            conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
            conn.write_all(&body).await?;
        }
        Some(Answer::Endless { status }) => {
            conn.write_all(
                format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            loop {
                conn.write_all(&zeros).await?;
                sent.fetch_add(zeros.len() as u64, Ordering::Relaxed);
            }
        }
        Some(Answer::Declared(len)) => {
            conn.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            loop {
                conn.write_all(&zeros).await?;
                sent.fetch_add(zeros.len() as u64, Ordering::Relaxed);
            }
        }
        Some(Answer::Drip { len, every }) => {
            conn.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            for _ in 0..len {
                conn.write_all(b" ").await?;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
        }
        Some(Answer::Stall { body, send }) => {
            conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
            conn.write_all(&body[..send]).await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Some(Answer::NoHeaders) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Some(Answer::Challenge) => {
            conn.write_all(
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{own}/token\",service=\"bad\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        }
    }
    let _ = conn.shutdown().await;
    Ok(())
}

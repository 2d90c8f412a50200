//! The API client over the daemon's unix socket, used by the CLI.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use zlayer_agent::ErrorKind;

use crate::error::kind_for;
use crate::types::{ErrorBody, MAX_JSON_BODY};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the zlayer-agent daemon at {}: {cause}\n  Is it running? Start it with: zlayer-agent daemon   (as root; see --help for --root/--state/--socket)", socket.display())]
    Unreachable {
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("{message}")]
    Api {
        kind: ErrorKind,
        status: u16,
        message: String,
        exit_code: Option<i32>,
    },
    #[error("talking to the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The exit status the CLI should end with: the container start failure's own (126/127),
    /// else 125 for errors of the agent (as docker), 1 when the daemon is unreachable.
    pub fn exit_status(&self) -> i32 {
        match self {
            ClientError::Api {
                exit_code: Some(c), ..
            } => *c,
            ClientError::Unreachable { .. } => 1,
            _ => 125,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Api { kind, .. } => *kind,
            _ => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

fn protocol<E: std::fmt::Display>(e: E) -> ClientError {
    ClientError::Protocol(e.to_string())
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request on a fresh connection and returns the response with its body unread.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let has_body = body.is_some();
        // Refused here rather than half-sent: the daemon answers 413 and closes while a large
        // body is still being written, which the client only saw as a broken connection.
        if let Some(len) = body.as_ref().map(Vec::len).filter(|n| *n > MAX_JSON_BODY) {
            return Err(ClientError::Api {
                kind: ErrorKind::InvalidInput,
                status: StatusCode::PAYLOAD_TOO_LARGE.as_u16(),
                message: crate::types::body_too_large(Some(len)),
                exit_code: None,
            });
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed();
        self.send_body(method, path, body, has_body).await
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        body: BoxBody<Bytes, std::io::Error>,
        json: bool,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|cause| ClientError::Unreachable {
                socket: self.socket.clone(),
                cause,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        tokio::spawn(async move {
            // The connection ends when the response body is dropped; errors surface there.
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "zlayer-agent");
        if json {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body).map_err(protocol)?;
        let resp = sender.send_request(req).await.map_err(protocol)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        Err(api_error(status, &bytes))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("bad response to {path}: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = serde_json::to_vec(body).map_err(protocol)?;
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None).await
    }

    /// Calls a streaming endpoint and hands each JSON line to `on_line` as it arrives.
    pub async fn stream<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        mut on_line: impl FnMut(T) -> Result<()>,
    ) -> Result<()> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(protocol)?),
            None => None,
        };
        let mut resp = self.send(method, path, body).await?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(protocol)?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = &line[..line.len() - 1];
                if line.is_empty() {
                    continue;
                }
                let item = serde_json::from_slice(line).map_err(|e| {
                    ClientError::Protocol(format!(
                        "bad line from {path}: {e}: {}",
                        String::from_utf8_lossy(line)
                    ))
                })?;
                on_line(item)?;
            }
        }
        Ok(())
    }
}

impl Client {
    /// Calls a framed-stream endpoint (exec, attach, logs): sends `stdin` chunks as the request
    /// body while it lasts, and hands each (stream, payload) frame to `on_frame`.
    pub async fn stream_frames(
        &self,
        method: Method,
        path: &str,
        stdin: Option<mpsc::Receiver<Bytes>>,
        mut on_frame: impl FnMut(u8, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let body = match stdin {
            Some(rx) => {
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b)));
                BoxBody::new(StreamBody::new(stream))
            }
            None => Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        };
        let mut resp = self.send_body(method, path, body, false).await?;
        let mut decoder = crate::frames::Decoder::default();
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.map_err(protocol)?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            decoder.push(data);
            while let Some((stream, payload)) = decoder.next_frame() {
                on_frame(stream, payload)?;
            }
        }
        Ok(())
    }
}

impl Client {
    /// `GET`s a raw (non-JSON) response, such as a container's archive; errors as for JSON
    /// calls. The caller reads the body.
    pub async fn get_raw(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.send(Method::GET, path, None).await
    }

    /// `PUT`s the chunks from `body` as a raw request body (a tar for `cp`) and parses the
    /// JSON answer.
    pub async fn put_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        body: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<T> {
        let stream = tokio_stream::wrappers::ReceiverStream::new(body)
            .map(|b| b.map(hyper::body::Frame::data));
        let resp = self
            .send_body(
                Method::PUT,
                path,
                BoxBody::new(StreamBody::new(stream)),
                false,
            )
            .await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(protocol)?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("bad response to {path}: {e}")))
    }
}

use tokio_stream::StreamExt as _;

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            kind: e.kind,
            status: status.as_u16(),
            message: e.error,
            exit_code: e.exit_code,
        },
        Err(_) => ClientError::Api {
            kind: kind_for(status),
            status: status.as_u16(),
            message: format!("{status}: {}", String::from_utf8_lossy(body).trim()),
            exit_code: None,
        },
    }
}

/// Percent-encodes a value for a query string (image references contain `/`, `:` and `@`).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

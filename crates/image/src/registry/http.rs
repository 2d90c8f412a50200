//! HTTP to one registry endpoint, on `reqwest` directly: the distribution API's GETs, the
//! bearer-token dance, and every response body read under a hard cap and under timeouts.
//!
//! Why not `oci-client` (which this replaced): it buffers every body it reads (manifests,
//! token responses, error bodies) whole, without any limit, so a registry answering with an
//! endless body grew the daemon until the OOM killer stopped it, and its one `read_timeout`
//! cannot say which wait timed out. Pulling only needs a handful of GETs, written here so each
//! read is bounded while it happens.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;

use super::auth::Credentials;

/// Largest token-endpoint response read (real ones are a few KiB).
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// Largest part of an error response read: enough for any registry's JSON error envelope.
pub const MAX_ERROR_BODY: u64 = 64 << 10;
/// How much of an error body goes into a message.
const ERROR_DETAIL_CHARS: usize = 300;

/// The waits a request is bounded by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// No response headers, or no body bytes, for this long: the transfer is stalled.
    pub progress: Duration,
    /// A whole small document (manifest, index, config, token, error body) must arrive
    /// within this: a registry dripping bytes just fast enough for `progress` is cut off.
    pub document: Duration,
}

/// What went wrong in one HTTP exchange. Each names the URL.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "{url}: {which} for {secs} s (progress timeout, registry setting progress_timeout_secs)"
    )]
    ProgressTimeout {
        url: String,
        /// "no response headers" or "no body data".
        which: &'static str,
        secs: u64,
    },
    #[error("{url}: the {what} did not arrive within {secs} s (document timeout, registry setting document_timeout_secs)")]
    DocumentTimeout {
        url: String,
        what: &'static str,
        secs: u64,
    },
    #[error("{url}: the {what} is {declared} bytes (Content-Length), larger than the {limit} allowed; not read")]
    DeclaredTooLarge {
        url: String,
        what: &'static str,
        declared: u64,
        limit: u64,
    },
    #[error(
        "{url}: the {what} is larger than the {limit} bytes allowed; stopped reading at the limit"
    )]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    #[error("{url}: HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        /// Error codes of the registry's JSON error envelope (`MANIFEST_UNKNOWN`, …).
        codes: Vec<String>,
        detail: String,
    },
    #[error("{url}: bad token response from {realm}: {detail}")]
    Token {
        url: String,
        realm: String,
        detail: String,
    },
}

impl HttpError {
    /// Whether trying again may help: stalls, dropped connections, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { source, .. } => {
                source.is_timeout()
                    || source.is_connect()
                    || source.is_request()
                    || source.is_body()
                    || source.is_decode()
            }
            HttpError::ProgressTimeout { .. } | HttpError::DocumentTimeout { .. } => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 429,
            HttpError::DeclaredTooLarge { .. }
            | HttpError::TooLarge { .. }
            | HttpError::Token { .. } => false,
        }
    }

    /// The kind of failure, from the status and what failed, never from the wording.
    pub fn kind(&self) -> super::RegistryErrorKind {
        use super::RegistryErrorKind as K;
        match self {
            // reqwest's "error sending request": nothing reached the registry.
            HttpError::Transport { source, .. } if source.is_request() || source.is_connect() => {
                K::Unreachable
            }
            HttpError::Transport { .. } => K::Network,
            HttpError::ProgressTimeout { .. } | HttpError::DocumentTimeout { .. } => K::Timeout,
            HttpError::DeclaredTooLarge { .. } | HttpError::TooLarge { .. } => K::TooLarge,
            HttpError::Status { status: 404, .. } => K::NotFound,
            HttpError::Status { status: 401, .. } => K::Unauthorized,
            HttpError::Status { status: 403, .. } => K::Denied,
            HttpError::Status { .. } => K::Server,
            HttpError::Token { .. } => K::InvalidResponse,
        }
    }
}

/// The JSON error envelope of the distribution spec.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    errors: Vec<EnvelopeError>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// One registry (or mirror) host: its HTTP client, credentials and the tokens it handed out.
pub(crate) struct Endpoint {
    /// `scheme://host` the requests go to.
    base: String,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    timeouts: Timeouts,
    /// Bearer tokens by scope (`repository:<name>:pull`).
    tokens: Mutex<HashMap<String, String>>,
    /// The registry challenged with Basic: credentials are sent with every request since.
    basic: AtomicBool,
}

impl Endpoint {
    /// `host` is the network host (`index.docker.io` for `docker.io`).
    pub fn new(
        host: &str,
        plain_http: bool,
        credentials: Option<Credentials>,
        timeouts: Timeouts,
    ) -> Result<Self, HttpError> {
        let scheme = if plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{host}");
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.progress)
            .user_agent(concat!("zlayer-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| HttpError::Transport {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            base,
            client,
            credentials,
            timeouts,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
        })
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// `…/v2/<repository>/<kind>/<reference>` (kind: `manifests` or `blobs`), with `?ns=` for
    /// a mirror serving another registry's repositories.
    pub fn url(&self, repository: &str, kind: &str, reference: &str, ns: Option<&str>) -> String {
        let mut url = format!("{}/v2/{repository}/{kind}/{reference}", self.base);
        if let Some(ns) = ns {
            url.push_str("?ns=");
            url.push_str(ns);
        }
        url
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The lock only guards a map; a poisoned one still holds valid tokens.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authorize(&self, req: RequestBuilder, scope: &str) -> RequestBuilder {
        match &self.credentials {
            Some(Credentials::Token { token }) => return req.bearer_auth(token),
            Some(Credentials::Basic { username, password })
                if self.basic.load(Ordering::Relaxed) =>
            {
                return req.basic_auth(username, Some(password));
            }
            _ => {}
        }
        match self.lock_tokens().get(scope) {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends `req`, bounded by the progress timeout until the response headers arrive.
    async fn send(&self, req: RequestBuilder, url: &str) -> Result<Response, HttpError> {
        match tokio::time::timeout(self.timeouts.progress, req.send()).await {
            Err(_) => Err(HttpError::ProgressTimeout {
                url: url.to_string(),
                which: "no response headers",
                secs: self.timeouts.progress.as_secs(),
            }),
            Ok(Err(source)) => Err(HttpError::Transport {
                url: url.to_string(),
                source,
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// GETs `url` of `repository` with pull authorisation: on a 401 it answers the
    /// registry's challenge (a bearer token from the challenge's realm, or Basic) once and
    /// asks again. The response may be any status: see [`Self::status_error`].
    pub async fn get(
        &self,
        url: &str,
        repository: &str,
        headers: HeaderMap,
    ) -> Result<Response, HttpError> {
        let scope = format!("repository:{repository}:pull");
        let mut answered_challenge = false;
        loop {
            let req = self.authorize(self.client.get(url).headers(headers.clone()), &scope);
            let resp = self.send(req, url).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered_challenge {
                return Ok(resp);
            }
            answered_challenge = true;
            let challenge = resp.headers().get(WWW_AUTHENTICATE).cloned();
            let Some(challenge) = challenge else {
                return Ok(resp);
            };
            if !self.answer_challenge(&challenge, &scope, url).await? {
                return Ok(resp);
            }
        }
    }

    /// Gets what `challenge` asks for; false when there is nothing we can answer it with.
    async fn answer_challenge(
        &self,
        challenge: &HeaderValue,
        scope: &str,
        url: &str,
    ) -> Result<bool, HttpError> {
        let Ok(text) = challenge.to_str() else {
            return Ok(false);
        };
        let mut bearer = None;
        let mut basic = false;
        for c in http_auth::ChallengeParser::new(text).flatten() {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    bearer = Some((realm, param("service")));
                }
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
        if let Some((realm, service)) = bearer {
            let token = self
                .fetch_token(&realm, service.as_deref(), scope, url)
                .await?;
            self.lock_tokens().insert(scope.to_string(), token);
            return Ok(true);
        }
        if basic && matches!(self.credentials, Some(Credentials::Basic { .. })) {
            // Answered once: a second 401 means the credentials were rejected.
            return Ok(!self.basic.swap(true, Ordering::Relaxed));
        }
        Ok(false)
    }

    /// Asks the token endpoint `realm` for a token for `scope`, with our credentials if any.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        url: &str,
    ) -> Result<String, HttpError> {
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.client.get(realm).query(&query);
        if let Some(Credentials::Basic { username, password }) = &self.credentials {
            req = req.basic_auth(username, Some(password));
        }
        let resp = self.send(req, realm).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp).await);
        }
        let body = self
            .read_document(resp, MAX_TOKEN_RESPONSE, "token response")
            .await?;
        let bad = |detail: String| HttpError::Token {
            url: url.to_string(),
            realm: realm.to_string(),
            detail,
        };
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| bad(format!("not a token document: {e}")))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no token in it".into()))
    }

    /// Reads a small document whole: refused unread when its declared length is over
    /// `limit`, cut off as soon as more than `limit` bytes arrived, and bounded by the
    /// progress timeout per read and the document timeout in total.
    pub async fn read_document(
        &self,
        mut resp: Response,
        limit: u64,
        what: &'static str,
    ) -> Result<Bytes, HttpError> {
        let url = resp.url().to_string();
        if let Some(declared) = resp.content_length() {
            if declared > limit {
                return Err(HttpError::DeclaredTooLarge {
                    url,
                    what,
                    declared,
                    limit,
                });
            }
        }
        let capacity = resp.content_length().unwrap_or(0).min(limit) as usize;
        let progress = self.timeouts.progress;
        let read_all = async {
            let mut buf = BytesMut::with_capacity(capacity);
            loop {
                let chunk = match tokio::time::timeout(progress, resp.chunk()).await {
                    Err(_) => {
                        return Err(HttpError::ProgressTimeout {
                            url: url.clone(),
                            which: "no body data",
                            secs: progress.as_secs(),
                        })
                    }
                    Ok(Err(source)) => {
                        return Err(HttpError::Transport {
                            url: url.clone(),
                            source,
                        })
                    }
                    Ok(Ok(None)) => return Ok(buf.freeze()),
                    Ok(Ok(Some(c))) => c,
                };
                if (buf.len() + chunk.len()) as u64 > limit {
                    return Err(HttpError::TooLarge {
                        url: url.clone(),
                        what,
                        limit,
                    });
                }
                buf.extend_from_slice(&chunk);
            }
        };
        match tokio::time::timeout(self.timeouts.document, read_all).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::DocumentTimeout {
                url,
                what,
                secs: self.timeouts.document.as_secs(),
            }),
        }
    }

    /// The error a non-success response means, with the first bytes of its body (at most
    /// [`MAX_ERROR_BODY`] are read) as detail.
    pub async fn status_error(&self, resp: Response) -> HttpError {
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let body = match self.read_error_body(resp).await {
            Ok(b) => b,
            Err(e) => Bytes::from(format!("(error body unreadable: {e})")),
        };
        let (codes, detail) = match serde_json::from_slice::<Envelope>(&body) {
            Ok(env) if !env.errors.is_empty() => (
                env.errors.iter().map(|e| e.code.clone()).collect(),
                env.errors
                    .iter()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            _ => (Vec::new(), String::from_utf8_lossy(&body).into_owned()),
        };
        let mut detail: String = detail
            .chars()
            .filter(|c| !c.is_control() || *c == ' ')
            .take(ERROR_DETAIL_CHARS)
            .collect();
        if detail.is_empty() {
            detail = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no detail")
                .to_string();
        }
        HttpError::Status {
            url,
            status,
            codes,
            detail,
        }
    }

    /// An error body, cut at [`MAX_ERROR_BODY`] (a longer one is truncated, not an error).
    async fn read_error_body(&self, mut resp: Response) -> Result<Bytes, HttpError> {
        let url = resp.url().to_string();
        let progress = self.timeouts.progress;
        let read = async {
            let mut buf = BytesMut::new();
            while (buf.len() as u64) < MAX_ERROR_BODY {
                match tokio::time::timeout(progress, resp.chunk()).await {
                    Err(_) | Ok(Ok(None)) => break,
                    Ok(Err(source)) => {
                        return Err(HttpError::Transport {
                            url: url.clone(),
                            source,
                        })
                    }
                    Ok(Ok(Some(c))) => {
                        let room = MAX_ERROR_BODY as usize - buf.len();
                        buf.extend_from_slice(&c[..c.len().min(room)]);
                    }
                }
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout(self.timeouts.document, read).await {
            Ok(r) => r,
            Err(_) => Ok(Bytes::from_static(b"(error body not received in time)")),
        }
    }

    /// GETs `url` without credentials (a foreign layer's alternative location: credentials
    /// for the registry must never go to other hosts).
    pub async fn get_anonymous(
        &self,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Response, HttpError> {
        let mut headers = headers;
        headers.remove(AUTHORIZATION);
        self.send(self.client.get(url).headers(headers), url).await
    }
}

/// A response body as a stream of chunks, failing with `TimedOut` when no bytes arrive for
/// `progress` (a stalled, not closed, connection) so the caller can resume.
pub(crate) fn body_stream(
    resp: Response,
    progress: Duration,
) -> BoxStream<'static, io::Result<Bytes>> {
    futures_util::stream::unfold(Some(resp), move |state| async move {
        let mut resp = state?;
        match tokio::time::timeout(progress, resp.chunk()).await {
            Err(_) => Some((
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no data for {} s (progress timeout, registry setting progress_timeout_secs)",
                        progress.as_secs()
                    ),
                )),
                None,
            )),
            Ok(Err(e)) => Some((Err(io::Error::other(e)), None)),
            Ok(Ok(None)) => None,
            Ok(Ok(Some(c))) => Some((Ok(c), Some(resp))),
        }
    })
    .boxed()
}

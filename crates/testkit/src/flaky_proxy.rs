//! `FlakyProxy`: a small HTTP-aware TCP proxy on a loopback port in front of a registry,
//! which can inject faults (an error status, or a connection cut after N bytes of the
//! response body) into requests whose path matches, so pull code's retry and HTTP Range
//! resume can be tested against a real registry.
//!
//! Each client connection carries exactly one request: the proxy adds `Connection: close`
//! to the forwarded request, so the registry closes after answering and the client opens a
//! new connection for its next request — which lets the proxy see (and log) every request
//! without parsing HTTP bodies. Hand-written (std threads, no HTTP crate) because the point
//! is to misbehave at the byte level, which ordinary proxies and servers refuse to do.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::Digest as _;

/// Largest request/response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status (e.g. 500, 503) without contacting the registry.
    Status(u16),
    /// Forward the request, pass the response head and the first `n` body bytes, then
    /// close the connection (a dropped download).
    DropAfterBodyBytes(u64),
}

#[derive(Debug, Clone)]
struct Rule {
    path_contains: String,
    method: Option<String>,
    fault: Fault,
    remaining: u32,
}

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The `Range` header, if the client sent one.
    pub range: Option<String>,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Vec<Rule>,
    log: Vec<RequestRecord>,
    token_auth: Option<TokenAuth>,
}

/// Registry token authentication (the Docker "token" flow) emulated by the proxy.
#[derive(Debug, Clone)]
struct TokenAuth {
    user: String,
    password: String,
    /// Tokens issued so far (opaque random strings).
    issued: Vec<String>,
    /// `scope` parameters of token requests, in order.
    scopes: Vec<String>,
    counter: u64,
}

/// Service name the proxy puts in its `WWW-Authenticate` challenges.
pub const TOKEN_SERVICE: &str = "zlayer-test-registry";

/// The proxy; stops accepting on drop.
#[derive(Debug)]
pub struct FlakyProxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panicking connection thread must not take the whole proxy down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FlakyProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<FlakyProxy> {
        Self::start_inner(upstream, None)
    }

    /// Like [`FlakyProxy::start`], but the proxy also demands registry bearer tokens, as
    /// Docker Hub does: requests without `Authorization: Bearer <token>` get 401 with
    /// `WWW-Authenticate: Bearer realm="http://<proxy>/token",service="zlayer-test-registry",
    /// scope="repository:<name>:pull[,push]"`; `GET /token` hands out a token when called
    /// with basic auth `user`/`password` (anonymous token requests get 401). Tokens are
    /// opaque to clients, so this exercises a client's whole token flow against a real
    /// registry behind it (the `Authorization` header is not forwarded).
    pub fn start_with_token_auth(
        upstream: SocketAddr,
        user: &str,
        password: &str,
    ) -> Result<FlakyProxy> {
        Self::start_inner(
            upstream,
            Some(TokenAuth {
                user: user.to_string(),
                password: password.to_string(),
                issued: Vec::new(),
                scopes: Vec::new(),
                counter: 0,
            }),
        )
    }

    /// `scope` parameters of the token requests seen so far (token-auth mode).
    pub fn token_scopes(&self) -> Vec<String> {
        lock(&self.shared)
            .token_auth
            .as_ref()
            .map(|t| t.scopes.clone())
            .unwrap_or_default()
    }

    fn start_inner(upstream: SocketAddr, token_auth: Option<TokenAuth>) -> Result<FlakyProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding proxy port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            token_auth,
            ..Shared::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (shared.clone(), stop.clone());
        let accept_thread = std::thread::Builder::new()
            .name("flaky-proxy".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let s3 = s2.clone();
                    let _ = std::thread::Builder::new()
                        .name("flaky-proxy-conn".into())
                        .spawn(move || {
                            if let Err(e) = handle(client, addr, upstream, &s3) {
                                eprintln!("flaky-proxy: connection error: {e:#}");
                            }
                        });
                }
            })
            .context("spawning proxy thread")?;
        Ok(FlakyProxy {
            addr,
            shared,
            stop,
            accept_thread: Some(accept_thread),
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of the proxy, to use as the registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Injects `fault` into the next `times` requests whose path contains `path_contains`
    /// (and whose method is `method`, when given, e.g. "GET"). Rules are tried in order.
    pub fn add_fault(&self, method: Option<&str>, path_contains: &str, fault: Fault, times: u32) {
        lock(&self.shared).rules.push(Rule {
            path_contains: path_contains.to_string(),
            method: method.map(str::to_string),
            fault,
            remaining: times,
        });
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        lock(&self.shared).rules.clear();
    }

    /// Requests seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared).log.clone()
    }

    /// Stops accepting connections (open ones finish on their own).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads until the end of an HTTP head (`\r\n\r\n`); returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((buf, rest)));
        }
        anyhow::ensure!(buf.len() <= MAX_HEAD, "HTTP head over {MAX_HEAD} bytes");
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        // A TLS ClientHello (record type 0x16): clients such as skopeo probe HTTPS first
        // and fall back to plain HTTP; hang up at once instead of waiting for a head.
        if buf.is_empty() && chunk[0] == 0x16 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn handle(
    mut client: TcpStream,
    own_addr: SocketAddr,
    upstream: SocketAddr,
    shared: &Mutex<Shared>,
) -> Result<()> {
    let Some((head, rest)) = read_head(&mut client)? else {
        return Ok(());
    };
    let head_str = String::from_utf8_lossy(&head).into_owned();
    let mut first = head_str.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    // Token auth first: a request answered 401 must not use up an injected fault.
    if lock(shared).token_auth.is_some() {
        if let TokenDecision::Answer(resp) =
            check_token(&method, &path, &head_str, own_addr, shared)
        {
            lock(shared).log.push(RequestRecord {
                method: method.clone(),
                path: path.clone(),
                range: header_value(&head_str, "Range"),
                fault: None,
            });
            client.write_all(&resp)?;
            client.flush()?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    let fault = {
        let mut sh = lock(shared);
        let fault = sh
            .rules
            .iter_mut()
            .find(|r| {
                r.remaining > 0
                    && path.contains(&r.path_contains)
                    && r.method.as_deref().is_none_or(|m| m == method)
            })
            .map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            });
        sh.log.push(RequestRecord {
            method: method.clone(),
            path: path.clone(),
            range: header_value(&head_str, "Range"),
            fault: fault.clone(),
        });
        fault
    };
    if let Some(Fault::Status(code)) = fault {
        let body = format!("fault injected by zlayer-testkit FlakyProxy for {method} {path}\n");
        write!(
            client,
            "HTTP/1.1 {code} Injected Fault\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        client.flush()?;
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    // Forward the head with `Connection: close` replacing any Connection header (and,
    // in token mode, without the bearer token the registry would not understand).
    let strip_auth = lock(shared).token_auth.is_some();
    let mut forwarded = String::new();
    for (i, line) in head_str.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let is_conn = line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"));
        let is_auth = line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"));
        if i > 0 && (is_conn || (is_auth && strip_auth)) {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).with_context(|| format!("connecting {upstream}"))?;
    up.write_all(forwarded.as_bytes())?;
    up.write_all(&rest)?;
    // Request body (uploads), copied until the client half-closes or the registry closes.
    let (mut c2, mut u2) = (client.try_clone()?, up.try_clone()?);
    let uploader = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let limit = match fault {
        Some(Fault::DropAfterBodyBytes(n)) => Some(n),
        _ => None,
    };
    let result = relay_response(&mut up, &mut client, limit);
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = uploader.join();
    result
}

/// Copies the response to the client; with `limit`, only the head and `limit` body bytes.
fn relay_response(up: &mut TcpStream, client: &mut TcpStream, limit: Option<u64>) -> Result<()> {
    let Some(n) = limit else {
        io::copy(up, client)?;
        return Ok(());
    };
    let Some((head, rest)) = read_head(up)? else {
        return Ok(());
    };
    client.write_all(&head)?;
    let first = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
    client.write_all(&rest[..first])?;
    let left = n - first as u64;
    io::copy(&mut up.take(left), client)?;
    client.flush()?;
    Ok(())
}

enum TokenDecision {
    Forward,
    /// A complete HTTP response to send instead of forwarding.
    Answer(Vec<u8>),
}

fn simple_response(status: &str, extra_headers: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Query parameter `key` of a request path (percent-decoding `%3A`/`%2C`/`%2F` only,
/// which is all registry scopes use).
fn query_param(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3A", ":")
                .replace("%3a", ":")
                .replace("%2C", ",")
                .replace("%2c", ",")
                .replace("%2F", "/")
                .replace("%2f", "/")
        })
    })
}

/// Repository named by a `/v2/<name>/(manifests|blobs|tags)/...` path.
fn repo_of(path: &str) -> Option<&str> {
    let p = path.split('?').next()?.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| p.find(m))
        .min()
        .map(|i| &p[..i])
}

fn check_token(
    method: &str,
    path: &str,
    head: &str,
    own_addr: SocketAddr,
    shared: &Mutex<Shared>,
) -> TokenDecision {
    use base64::Engine as _;
    let auth_header = header_value(head, "Authorization");
    let mut sh = lock(shared);
    let Some(ta) = sh.token_auth.as_mut() else {
        return TokenDecision::Forward;
    };
    if path.starts_with("/token") {
        let want = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", ta.user, ta.password));
        let ok = auth_header
            .as_deref()
            .and_then(|h| h.strip_prefix("Basic "))
            .is_some_and(|b| b.trim() == want);
        if !ok {
            let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"token server: bad or missing basic credentials"}]}"#;
            return TokenDecision::Answer(simple_response(
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"zlayer-test-token\"\r\n",
                "application/json",
                body,
            ));
        }
        ta.scopes
            .push(query_param(path, "scope").unwrap_or_default());
        ta.counter += 1;
        let token = hex::encode(sha2::Sha256::digest(
            format!(
                "{own_addr}-{}-{:?}",
                ta.counter,
                std::time::SystemTime::now()
            )
            .as_bytes(),
        ));
        ta.issued.push(token.clone());
        let body = format!(
            r#"{{"token":"{token}","access_token":"{token}","expires_in":300,"issued_at":"1970-01-01T00:00:00Z"}}"#
        );
        return TokenDecision::Answer(simple_response("200 OK", "", "application/json", &body));
    }
    let presented = auth_header
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if presented.is_some_and(|t| ta.issued.iter().any(|i| i == t)) {
        return TokenDecision::Forward;
    }
    let mut challenge =
        format!("Bearer realm=\"http://{own_addr}/token\",service=\"{TOKEN_SERVICE}\"");
    if let Some(repo) = repo_of(path) {
        let actions = if method == "GET" || method == "HEAD" {
            "pull"
        } else {
            "pull,push"
        };
        challenge.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
    }
    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
    TokenDecision::Answer(simple_response(
        "401 Unauthorized",
        &format!(
            "WWW-Authenticate: {challenge}\r\nDocker-Distribution-API-Version: registry/2.0\r\n"
        ),
        "application/json",
        body,
    ))
}

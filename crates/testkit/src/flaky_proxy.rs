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
}

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
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding proxy port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
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
                            if let Err(e) = handle(client, upstream, &s3) {
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

fn handle(mut client: TcpStream, upstream: SocketAddr, shared: &Mutex<Shared>) -> Result<()> {
    let Some((head, rest)) = read_head(&mut client)? else {
        return Ok(());
    };
    let head_str = String::from_utf8_lossy(&head).into_owned();
    let mut first = head_str.lines().next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
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
    // Forward the head with `Connection: close` replacing any Connection header.
    let mut forwarded = String::new();
    for (i, line) in head_str.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let is_conn = line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"));
        if i > 0 && is_conn {
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

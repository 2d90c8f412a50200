//! Health checks: the per-replica state machine (start grace, consecutive failures, retries) and
//! the network probes.
//!
//! TCP and HTTP probes connect from inside the container's network namespace (a short-lived
//! thread enters `/proc/<pid>/ns/net`), so they test what the service really listens on for
//! every network mode: with `network: host` that is the host's 127.0.0.1, with `none` the
//! container's own loopback. Command checks run inside the container through the shim's exec
//! (see `probe.rs`), never on the host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zlayer_spec::Health;

/// A replica's health as shown by `ps`, `services` and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No result that counts yet (within start_grace, or fewer than `retries` failures).
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "starting" => Some(HealthStatus::Starting),
            "healthy" => Some(HealthStatus::Healthy),
            "unhealthy" => Some(HealthStatus::Unhealthy),
            _ => None,
        }
    }
}

/// Why a probe failed. Its text is what `health_status` events and init-step failures show, so
/// each variant keeps the wording the string errors had.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("container network namespace {path}: {source}")]
    OpenNetns {
        path: String,
        source: std::io::Error,
    },
    #[error("entering {path}: {source}")]
    EnterNetns { path: String, source: nix::Error },
    #[error("spawning probe thread: {0}")]
    SpawnThread(std::io::Error),
    #[error("probe thread panicked")]
    ThreadPanicked,
    /// A blocking probe task that did not finish (the runtime shut down, or it panicked).
    #[error("{0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("tcp 127.0.0.1:{port}: {source}")]
    Tcp { port: u16, source: std::io::Error },
    /// An HTTP probe's connection, request or response failed.
    #[error("{url}: {source}")]
    Http { url: String, source: std::io::Error },
    /// Setting a socket's timeouts failed.
    #[error("{0}")]
    Socket(std::io::Error),
    #[error("{url}: {host} has no address")]
    NoAddress { url: String, host: String },
    #[error("{url}: not an HTTP response: {line:?}")]
    NotHttp { url: String, line: String },
    #[error("{url}: status {code}")]
    Status { url: String, code: u16 },
    /// Bringing up loopback in a container's namespace failed at `step`.
    #[error("{step}: {source}")]
    Loopback {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("command timed out after {0}ms")]
    CommandTimeout(u128),
    #[error("command exited with {code}: {stderr}")]
    CommandFailed { code: i64, stderr: String },
    /// A command check could not be run in the container.
    #[error("{0}")]
    Exec(#[from] crate::error::AgentError),
}

/// The health of one running replica, fed with probe results.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    started: Instant,
    pub status: HealthStatus,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub checks: u64,
}

impl HealthTracker {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            status: HealthStatus::Starting,
            consecutive_failures: 0,
            last_error: None,
            checks: 0,
        }
    }

    /// A tracker for a replica adopted after a daemon restart: it keeps the status stored
    /// before (so a healthy replica does not drop back to `starting`), and `started` is when
    /// the container really started (so `start_grace` is not granted twice).
    pub fn resume(started: Instant, status: HealthStatus) -> Self {
        Self {
            status,
            ..Self::new(started)
        }
    }

    /// Records one probe result at `now`; returns the new status when it changed.
    ///
    /// A success makes the replica healthy at once. Failures during `start_grace` do not count
    /// (the service is still starting); after it, `retries` failures in a row make it unhealthy.
    pub fn record(
        &mut self,
        now: Instant,
        result: Result<(), impl std::fmt::Display>,
        cfg: &Health,
    ) -> Option<HealthStatus> {
        self.checks += 1;
        let before = self.status;
        match result {
            Ok(()) => {
                self.consecutive_failures = 0;
                self.last_error = None;
                self.status = HealthStatus::Healthy;
            }
            Err(e) => {
                self.last_error = Some(e.to_string());
                let in_grace = now.saturating_duration_since(self.started) < cfg.start_grace.get();
                if !in_grace {
                    self.consecutive_failures += 1;
                    if self.consecutive_failures >= cfg.retries.max(1) {
                        self.status = HealthStatus::Unhealthy;
                    }
                }
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// Runs `f` on a fresh thread that first joins the network namespace of process `pid`, so
/// sockets it opens live in the container's network. The thread ends with `f`, so the
/// namespace switch never leaks into the daemon's other threads.
pub fn in_netns<T: Send + 'static>(
    pid: i64,
    f: impl FnOnce() -> Result<T, ProbeError> + Send + 'static,
) -> Result<T, ProbeError> {
    let path = format!("/proc/{pid}/ns/net");
    let handle = std::thread::Builder::new()
        .name("zlayer-probe".into())
        .spawn(move || {
            let ns = match std::fs::File::open(&path) {
                Ok(ns) => ns,
                Err(source) => return Err(ProbeError::OpenNetns { path, source }),
            };
            if let Err(source) = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET) {
                return Err(ProbeError::EnterNetns { path, source });
            }
            f()
        })
        .map_err(ProbeError::SpawnThread)?;
    handle.join().map_err(|_| ProbeError::ThreadPanicked)?
}

/// Connects to 127.0.0.1:`port` within `timeout`.
pub fn probe_tcp(port: u16, timeout: Duration) -> Result<(), ProbeError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|source| ProbeError::Tcp { port, source })
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0; healthy when the status equals `status`, or
/// is 2xx/3xx when none is given. Hand-written (a few lines of HTTP/1.0) rather than pulling an
/// HTTP client into the daemon for one request whose socket must be opened in another netns.
pub fn probe_http(
    port: u16,
    path: &str,
    status: Option<u16>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    probe_http_host("127.0.0.1", port, path, status, timeout)
}

/// [`probe_http`] against any host (init steps' `wait_http`).
pub fn probe_http_host(
    host: &str,
    port: u16,
    path: &str,
    status: Option<u16>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    use std::net::ToSocketAddrs;
    let url = format!("http://{host}:{port}{path}");
    let http = |source| ProbeError::Http {
        url: url.clone(),
        source,
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(http)?
        .next()
        .ok_or_else(|| ProbeError::NoAddress {
            url: url.clone(),
            host: host.to_string(),
        })?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(http)?;
    s.set_read_timeout(Some(timeout))
        .map_err(ProbeError::Socket)?;
    s.set_write_timeout(Some(timeout))
        .map_err(ProbeError::Socket)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: zlayer-health\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(http)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = s.read(&mut buf).map_err(http)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ProbeError::NotHttp {
            url: url.clone(),
            line: line.to_string(),
        })?;
    let ok = match status {
        Some(want) => code == want,
        None => (200..400).contains(&code),
    };
    if ok {
        Ok(())
    } else {
        Err(ProbeError::Status { url, code })
    }
}

/// Brings the loopback interface up in the network namespace of process `pid`.
///
/// Stopgap for `network: none`: the runtime creates the container's namespace but leaves `lo`
/// down, so nothing (not the service's own clients, not our probes) can reach 127.0.0.1 in it.
/// Docker's `none` has loopback up; until the runtime does this itself, the supervisor does it
/// right after starting a replica. Only the container's own namespace is touched, never the
/// host's; idempotent.
pub fn loopback_up(pid: i64) -> Result<(), ProbeError> {
    let failed = |step| ProbeError::Loopback {
        step,
        source: std::io::Error::last_os_error(),
    };
    in_netns(pid, move || {
        // SAFETY: plain socket(2); the fd is checked and closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(failed("socket"));
        }
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives across the calls
        // and holds a NUL-terminated interface name; `fd` is a valid socket.
        let result = unsafe {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
                Err(failed("reading lo flags"))
            } else {
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                    Err(failed("bringing lo up"))
                } else {
                    Ok(())
                }
            }
        };
        // SAFETY: closing the socket opened above, once.
        unsafe { libc::close(fd) };
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zlayer_spec::{HealthCheck, HumanDuration};

    fn cfg(retries: u32, grace: u64) -> Health {
        Health {
            check: HealthCheck::Tcp { port: 1 },
            interval: HumanDuration::secs(1),
            timeout: HumanDuration::secs(1),
            retries,
            start_grace: HumanDuration::secs(grace),
        }
    }

    #[test]
    fn grace_retries_and_recovery() {
        let t0 = Instant::now();
        let c = cfg(2, 5);
        let mut h = HealthTracker::new(t0);
        // Failures within the grace period do not count.
        assert_eq!(h.record(t0, Err("x"), &c), None);
        assert_eq!(h.record(t0 + Duration::from_secs(4), Err("x"), &c), None);
        assert_eq!(h.consecutive_failures, 0);
        let t = t0 + Duration::from_secs(6);
        assert_eq!(h.record(t, Err("x"), &c), None);
        assert_eq!(
            h.record(t, Err("refused"), &c),
            Some(HealthStatus::Unhealthy)
        );
        assert_eq!(h.last_error.as_deref(), Some("refused"));
        assert_eq!(
            h.record(t, Ok::<(), &str>(()), &c),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.record(t, Ok::<(), &str>(()), &c), None);
    }

    #[test]
    fn http_and_tcp_probes_against_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, conn) in l.incoming().take(3).enumerate() {
                let mut c = conn.unwrap();
                if i == 0 {
                    continue; // the TCP probe: connect only
                }
                let mut buf = [0u8; 1024];
                let n = c.read(&mut buf).unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                write!(c, "HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        let t = Duration::from_secs(2);
        probe_tcp(port, t).unwrap();
        probe_http(port, "/ok", None, t).unwrap();
        let e = probe_http(port, "/missing", None, t).unwrap_err();
        assert!(matches!(e, ProbeError::Status { code: 404, .. }), "{e}");
        assert!(e.to_string().ends_with("/missing: status 404"), "{e}");
        server.join().unwrap();
        // Nothing listens any more.
        assert!(probe_tcp(port, t).is_err());
    }

    #[test]
    fn probe_in_own_netns() {
        // Our own namespace: same result as without switching.
        let pid = i64::from(std::process::id());
        let v = in_netns(pid, || Ok(7)).unwrap();
        assert_eq!(v, 7);
        let e = in_netns(i64::from(i32::MAX), || Ok(())).unwrap_err();
        assert!(matches!(e, ProbeError::OpenNetns { .. }), "{e}");
        assert!(e.to_string().contains("/proc/"), "{e}");
    }
}

//! Prometheus text exposition (`GET /metrics` on the opt-in `--metrics-addr` listener).
//! Counters are plain atomics; gauges (containers by state) are computed at scrape time from
//! the records. Hand-written: the text format is a few lines, not worth a metrics framework.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::containers::ContainerState;
use crate::Agent;

/// Upper bounds (seconds) of the API latency histogram buckets.
const BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The daemon's counters.
#[derive(Default)]
pub struct Metrics {
    restarts: AtomicU64,
    health_ok: AtomicU64,
    health_failed: AtomicU64,
    pull_bytes: AtomicU64,
    api: Mutex<std::collections::BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn health_check(&self, ok: bool) {
        let c = if ok {
            &self.health_ok
        } else {
            &self.health_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes downloaded by image pulls.
    pub fn pulled(&self, bytes: u64) {
        self.pull_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One API request of `method` on the route pattern `route` took `took`.
    pub fn api_request(&self, method: &str, route: &str, took: Duration) {
        let mut api = self.api.lock();
        let h = api.entry(format!("{method} {route}")).or_default();
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    fn render_counters(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP zlayer_restarts_total Replica restarts by the supervisor."
        );
        let _ = writeln!(out, "# TYPE zlayer_restarts_total counter");
        let _ = writeln!(
            out,
            "zlayer_restarts_total {}",
            self.restarts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP zlayer_health_checks_total Health probes by result."
        );
        let _ = writeln!(out, "# TYPE zlayer_health_checks_total counter");
        let _ = writeln!(
            out,
            "zlayer_health_checks_total{{result=\"success\"}} {}",
            self.health_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "zlayer_health_checks_total{{result=\"failure\"}} {}",
            self.health_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP zlayer_pull_bytes_total Bytes downloaded by image pulls."
        );
        let _ = writeln!(out, "# TYPE zlayer_pull_bytes_total counter");
        let _ = writeln!(
            out,
            "zlayer_pull_bytes_total {}",
            self.pull_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP zlayer_api_request_duration_seconds API request latency."
        );
        let _ = writeln!(out, "# TYPE zlayer_api_request_duration_seconds histogram");
        for (route, h) in self.api.lock().iter() {
            let (method, path) = route.split_once(' ').unwrap_or(("", route));
            let labels = format!("method=\"{method}\",route=\"{}\"", path.replace('"', "'"));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "zlayer_api_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "zlayer_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "zlayer_api_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "zlayer_api_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

impl Agent {
    /// The whole `/metrics` page.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let (mut created, mut running, mut exited) = (0u64, 0u64, 0u64);
        let mut health = std::collections::BTreeMap::<&str, u64>::new();
        if let Ok(list) = self.containers().list() {
            for r in &list {
                match r.state {
                    ContainerState::Created => created += 1,
                    ContainerState::Running | ContainerState::Paused => running += 1,
                    ContainerState::Exited => exited += 1,
                }
                if r.state == ContainerState::Running {
                    if let Some(h) = self.services().health_of(&r.id) {
                        *health.entry(h.as_str()).or_default() += 1;
                    }
                }
            }
        }
        let _ = writeln!(out, "# HELP zlayer_containers Containers by state.");
        let _ = writeln!(out, "# TYPE zlayer_containers gauge");
        for (s, n) in [
            ("created", created),
            ("running", running),
            ("exited", exited),
        ] {
            let _ = writeln!(out, "zlayer_containers{{state=\"{s}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP zlayer_containers_health Running containers with a health check, by health."
        );
        let _ = writeln!(out, "# TYPE zlayer_containers_health gauge");
        for s in ["starting", "healthy", "unhealthy"] {
            let _ = writeln!(
                out,
                "zlayer_containers_health{{health=\"{s}\"}} {}",
                health.get(s).copied().unwrap_or(0)
            );
        }
        self.services().metrics.render_counters(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histogram_render() {
        let m = Metrics::default();
        m.restart();
        m.health_check(true);
        m.health_check(false);
        m.api_request("GET", "/v1/containers", Duration::from_millis(3));
        let mut out = String::new();
        m.render_counters(&mut out);
        assert!(out.contains("zlayer_restarts_total 1\n"), "{out}");
        assert!(out.contains("zlayer_health_checks_total{result=\"failure\"} 1\n"));
        assert!(out.contains("route=\"/v1/containers\",le=\"0.001\"} 0\n"));
        assert!(out.contains("route=\"/v1/containers\",le=\"0.005\"} 1\n"));
        assert!(out.contains("zlayer_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/containers\"} 1\n"));
    }
}

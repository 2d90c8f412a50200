//! Pull progress events (streamed by the daemon as JSON lines) and a renderer for the CLI:
//! per-layer bars on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::Write;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// A layer as announced by [`PullEvent::Resolved`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LayerInfo {
    pub digest: Digest,
    pub size: u64,
}

/// What a pull is doing. Layer events name the layer by its (compressed) blob digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// Asking the registry for the manifest.
    Resolving {
        reference: String,
    },
    /// The image manifest was found; `digest` is its digest.
    Resolved {
        reference: String,
        digest: Digest,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
        layers: Vec<LayerInfo>,
    },
    /// Queued behind other downloads.
    Waiting {
        layer: Digest,
        size: u64,
    },
    /// The layer is already unpacked locally: nothing to do.
    AlreadyExists {
        layer: Digest,
    },
    Downloading {
        layer: Digest,
        done: u64,
        total: u64,
    },
    /// The download failed and is retried (resuming where it stopped when possible).
    Retrying {
        layer: Digest,
        attempt: u32,
        error: String,
    },
    /// All bytes are in; checking size and sha256.
    Verifying {
        layer: Digest,
    },
    /// Decompressing and unpacking into the layer's snapshot.
    Extracting {
        layer: Digest,
    },
    Done {
        layer: Digest,
    },
    /// The whole image is pulled and unpacked.
    Complete {
        reference: String,
        digest: Digest,
    },
}

/// Counts the layer bytes a pull actually downloaded, from its [`PullEvent::Downloading`]
/// events: for the daemon's `zlayer_pull_bytes_total` metric.
///
/// Each download attempt of a layer starts with an event at its starting offset (the full size
/// when the blob was already stored, the resume offset after a retry); only growth after that
/// counts, so blobs already present and bytes kept from an earlier attempt are not counted twice.
#[derive(Debug, Default)]
pub struct DownloadedBytes {
    seen: HashMap<Digest, u64>,
    total: u64,
}

impl DownloadedBytes {
    pub fn observe(&mut self, event: &PullEvent) {
        let PullEvent::Downloading { layer, done, .. } = event else {
            return;
        };
        match self.seen.get_mut(layer) {
            None => {
                self.seen.insert(layer.clone(), *done);
            }
            Some(last) => {
                // A smaller offset is a new attempt starting over (or resuming): the baseline.
                self.total += done.saturating_sub(*last);
                *last = *done;
            }
        }
    }

    /// Bytes downloaded so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Draws [`PullEvent`]s for a person: indicatif bars per layer on a terminal, plain lines
/// (state changes only) otherwise, both on stderr.
pub struct ProgressRenderer {
    mode: Mode,
}

enum Mode {
    Bars {
        multi: MultiProgress,
        bars: HashMap<Digest, ProgressBar>,
    },
    Lines {
        last: HashMap<Digest, &'static str>,
    },
}

impl ProgressRenderer {
    /// Bars when stderr is a terminal, else plain lines.
    pub fn auto() -> Self {
        use std::io::IsTerminal;
        Self::new(std::io::stderr().is_terminal())
    }

    pub fn new(terminal: bool) -> Self {
        let mode = if terminal {
            Mode::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: HashMap::new(),
            }
        } else {
            Mode::Lines {
                last: HashMap::new(),
            }
        };
        Self { mode }
    }

    /// Shows one event.
    pub fn handle(&mut self, event: &PullEvent) {
        match &mut self.mode {
            Mode::Bars { multi, bars } => handle_bars(multi, bars, event),
            Mode::Lines { last } => {
                if let Some(line) = plain_line(last, event) {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    /// Removes bars that are still drawn (e.g. after an error).
    pub fn finish(&mut self) {
        if let Mode::Bars { bars, .. } = &mut self.mode {
            for (_, b) in bars.drain() {
                b.abandon();
            }
        }
    }
}

/// Renders a stream of events with [`ProgressRenderer::auto`]; for the CLI reading the
/// daemon's JSON lines.
pub fn render_progress(events: impl IntoIterator<Item = PullEvent>) {
    let mut r = ProgressRenderer::auto();
    for e in events {
        r.handle(&e);
    }
    r.finish();
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {msg:<12} [{bar:30}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

fn handle_bars(multi: &MultiProgress, bars: &mut HashMap<Digest, ProgressBar>, event: &PullEvent) {
    let mut bar = |layer: &Digest, total: Option<u64>| {
        bars.entry(layer.clone())
            .or_insert_with(|| {
                let b = multi.add(ProgressBar::new(total.unwrap_or(0)));
                b.set_style(bar_style());
                b.set_prefix(layer.short().to_string());
                b
            })
            .clone()
    };
    match event {
        PullEvent::Resolving { reference } => {
            let _ = multi.println(format!("Pulling {reference}"));
        }
        PullEvent::Resolved { digest, layers, .. } => {
            let _ = multi.println(format!("Digest: {digest}"));
            for l in layers {
                bar(&l.digest, Some(l.size));
            }
        }
        PullEvent::Waiting { layer, size } => bar(layer, Some(*size)).set_message("waiting"),
        PullEvent::AlreadyExists { layer } => {
            let b = bar(layer, None);
            b.set_message("already exists");
            b.finish();
        }
        PullEvent::Downloading { layer, done, total } => {
            let b = bar(layer, Some(*total));
            b.set_length(*total);
            b.set_position(*done);
            b.set_message("downloading");
        }
        PullEvent::Retrying { layer, attempt, .. } => {
            bar(layer, None).set_message(format!("retry {attempt}"))
        }
        PullEvent::Verifying { layer } => bar(layer, None).set_message("verifying"),
        PullEvent::Extracting { layer } => bar(layer, None).set_message("extracting"),
        PullEvent::Done { layer } => {
            let b = bar(layer, None);
            b.set_position(b.length().unwrap_or(0));
            b.set_message("done");
            b.finish();
        }
        PullEvent::Complete { reference, digest } => {
            let _ = multi.println(format!("Pulled {reference} ({digest})"));
        }
    }
}

/// One line per state change (not per byte count), for logs and pipes.
fn plain_line(last: &mut HashMap<Digest, &'static str>, event: &PullEvent) -> Option<String> {
    let mut change = |layer: &Digest, state: &'static str| -> bool {
        last.insert(layer.clone(), state) != Some(state)
    };
    match event {
        PullEvent::Resolving { reference } => Some(format!("Pulling {reference}")),
        PullEvent::Resolved {
            digest, platform, ..
        } => Some(match platform {
            Some(p) => format!("Digest: {digest} ({p})"),
            None => format!("Digest: {digest}"),
        }),
        PullEvent::Waiting { layer, .. } => {
            change(layer, "waiting").then(|| format!("{}: waiting", layer.short()))
        }
        PullEvent::AlreadyExists { layer } => {
            change(layer, "exists").then(|| format!("{}: already exists", layer.short()))
        }
        PullEvent::Downloading { layer, total, .. } => change(layer, "downloading")
            .then(|| format!("{}: downloading ({total} bytes)", layer.short())),
        PullEvent::Retrying {
            layer,
            attempt,
            error,
        } => {
            last.insert(layer.clone(), "retrying");
            Some(format!("{}: retry {attempt}: {error}", layer.short()))
        }
        PullEvent::Verifying { layer } => {
            change(layer, "verifying").then(|| format!("{}: verifying", layer.short()))
        }
        PullEvent::Extracting { layer } => {
            change(layer, "extracting").then(|| format!("{}: extracting", layer.short()))
        }
        PullEvent::Done { layer } => {
            change(layer, "done").then(|| format!("{}: done", layer.short()))
        }
        PullEvent::Complete { reference, digest } => Some(format!("Pulled {reference} ({digest})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json_lines() {
        let d = Digest::of_bytes(b"x");
        let e = PullEvent::Downloading {
            layer: d.clone(),
            done: 5,
            total: 10,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            format!(r#"{{"event":"downloading","layer":"{d}","done":5,"total":10}}"#)
        );
        assert_eq!(serde_json::from_str::<PullEvent>(&line).unwrap(), e);
    }

    #[test]
    fn plain_lines_only_on_state_changes() {
        let d = Digest::of_bytes(b"x");
        let mut last = HashMap::new();
        let dl = |done| PullEvent::Downloading {
            layer: d.clone(),
            done,
            total: 10,
        };
        assert!(plain_line(&mut last, &dl(1)).is_some());
        assert!(plain_line(&mut last, &dl(5)).is_none());
        let done = plain_line(&mut last, &PullEvent::Done { layer: d.clone() }).unwrap();
        assert_eq!(done, format!("{}: done", d.short()));
    }

    #[test]
    fn renderer_handles_a_whole_pull_in_both_modes() {
        let d = Digest::of_bytes(b"layer");
        let events = vec![
            PullEvent::Resolving {
                reference: "r".into(),
            },
            PullEvent::Resolved {
                reference: "r".into(),
                digest: d.clone(),
                platform: Some("linux/amd64".into()),
                layers: vec![LayerInfo {
                    digest: d.clone(),
                    size: 10,
                }],
            },
            PullEvent::Waiting {
                layer: d.clone(),
                size: 10,
            },
            PullEvent::Downloading {
                layer: d.clone(),
                done: 5,
                total: 10,
            },
            PullEvent::Retrying {
                layer: d.clone(),
                attempt: 1,
                error: "reset".into(),
            },
            PullEvent::Verifying { layer: d.clone() },
            PullEvent::Extracting { layer: d.clone() },
            PullEvent::Done { layer: d.clone() },
            PullEvent::Complete {
                reference: "r".into(),
                digest: d,
            },
        ];
        for terminal in [true, false] {
            let mut r = ProgressRenderer::new(terminal);
            for e in &events {
                r.handle(e);
            }
            r.finish();
        }
    }

    #[test]
    fn downloaded_bytes_count_growth_only() {
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let dl = |layer: &Digest, done| PullEvent::Downloading {
            layer: layer.clone(),
            done,
            total: 100,
        };
        let mut n = DownloadedBytes::default();
        // Layer a: already stored (one event at its full size): nothing downloaded.
        n.observe(&dl(&a, 100));
        assert_eq!(n.total(), 0);
        // Layer b: resumed at 20 from an earlier pull, 50 more, then the connection drops and
        // the retry resumes at 60 (10 bytes were lost with the failed attempt) and finishes.
        for (done, want) in [(20, 0), (50, 30), (70, 50), (60, 50), (100, 90)] {
            n.observe(&dl(&b, done));
            assert_eq!(n.total(), want, "after done={done}");
        }
        // Other events do not count.
        n.observe(&PullEvent::Done { layer: b });
        assert_eq!(n.total(), 90);
    }
}

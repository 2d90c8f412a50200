//! The entry functions of the fuzz harnesses. Each takes the fuzzer's bytes and drives one
//! parser of untrusted input the way the agent does; any panic is a bug. They live in the main
//! workspace (not only in `fuzz/`, which needs libFuzzer and instrumentation flags) so that
//! `tests/corpus.rs` replays every stored corpus input through exactly the same code on every
//! `cargo test`, and a crash once found stays fixed.
//!
//! The targets, named as the directories of `fuzz/corpus/` and the binaries of `fuzz/`:
//! [`unpack`], [`reference`], [`manifest`], [`spec`], [`api_json`].

mod api;
mod image;

pub use api::api_json;
pub use image::{manifest, reference, unpack};

/// A target's entry function: takes the fuzzer's bytes, panics on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay and `fuzz/run.sh`.
pub const TARGETS: &[(&str, Target)] = &[
    ("unpack", unpack),
    ("reference", reference),
    ("manifest", manifest),
    ("spec", spec),
    ("api_json", api_json),
];

/// The deployment spec parser (YAML text, decoding and validation), as `deploy` runs it.
pub fn spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match zlayer_spec::parse_str_with_map(text, "fuzz.yaml") {
        Ok((deployment, _map)) => {
            // What `deploy --dry-run` shows: the plan against nothing running and against itself.
            let _ = zlayer_spec::plan(&deployment, None);
            let _ = zlayer_spec::plan(&deployment, Some(&deployment));
            // The agent stores a deployment as JSON and reads it back on restart: it must come
            // back the same.
            let json = serde_json::to_string(&deployment).expect("a deployment serialises");
            let back: zlayer_spec::Deployment =
                serde_json::from_str(&json).expect("a stored deployment reads back");
            assert_eq!(back, deployment, "deployment JSON round trip");
        }
        Err(errors) => {
            // Every error must render (positions, names) without panicking.
            let _ = errors.to_string();
        }
    }
}

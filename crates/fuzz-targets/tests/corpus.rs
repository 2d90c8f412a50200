//! Replays every stored fuzz input (`fuzz/corpus/<target>/*`) through its target's entry
//! function: the corpora's seeds, everything the fuzzer kept as new coverage and every input
//! that once crashed. Works on stable Rust without libFuzzer, so it runs in every `cargo test`.

use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_target_has_a_corpus_and_every_input_replays() {
    for (name, target) in zlayer_fuzz_targets::TARGETS {
        let dir = corpus_root().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
            .map(|e| e.expect("a corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "the corpus of {name} has only {} inputs",
            files.len()
        );
        for file in &files {
            let data = std::fs::read(file).expect("reading a corpus input");
            // A panic names the input, so it can be replayed alone with `fuzz/run.sh`.
            eprintln!("{name}: {}", file.display());
            target(&data);
        }
        println!("{name}: {} inputs replayed", files.len());
    }
}

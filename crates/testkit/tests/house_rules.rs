//! House rules of the repository that the compiler cannot keep (issue 12): no non-test source
//! file under `crates/*/src` grows past 800 lines. A file that big holds several jobs; split it
//! by job (see the README's "How it is built"). Test files (`tests.rs`, anything under a `tests/`
//! directory) are exempt: a table of cases may be long.

use std::path::{Path, PathBuf};

/// The most lines a non-test source file may have.
const MAX_LINES: usize = 800;

/// Every `.rs` file under `dir`, recursively, except test files.
fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if name != "tests" {
                source_files(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// The non-test source files of `crates_dir/*/src` longer than `max` lines, with their length,
/// sorted longest first.
fn oversized(crates_dir: &Path, max: usize) -> Vec<(PathBuf, usize)> {
    let mut files = Vec::new();
    let crates = std::fs::read_dir(crates_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", crates_dir.display()));
    for krate in crates {
        let src = krate.expect("reading crates/").path().join("src");
        if src.is_dir() {
            source_files(&src, &mut files);
        }
    }
    assert!(
        !files.is_empty(),
        "no source files found under {}",
        crates_dir.display()
    );
    let mut long: Vec<(PathBuf, usize)> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f)
                .unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
            (f, text.lines().count())
        })
        .filter(|(_, n)| *n > max)
        .collect();
    long.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    long
}

#[test]
fn no_source_file_over_800_lines() {
    let crates_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = crates_dir
        .join("..")
        .canonicalize()
        .expect("repository root");
    let long = oversized(&crates_dir, MAX_LINES);
    let names: Vec<String> = long
        .iter()
        .map(|(f, n)| {
            let f = f.canonicalize().unwrap_or_else(|_| f.clone());
            let shown = f.strip_prefix(&root).unwrap_or(&f);
            format!("  {} ({n} lines)", shown.display())
        })
        .collect();
    assert!(
        long.is_empty(),
        "{} source file(s) over {MAX_LINES} lines; split each by job:\n{}",
        long.len(),
        names.join("\n")
    );
}

/// The rule itself, on a tree made for it: a long file is named, test files and short files are
/// not.
#[test]
fn oversized_names_long_non_test_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("demo/src");
    std::fs::create_dir_all(src.join("tests")).unwrap();
    std::fs::create_dir_all(src.join("deep")).unwrap();
    let lines = |n: usize| "x\n".repeat(n);
    std::fs::write(src.join("lib.rs"), lines(10)).unwrap();
    std::fs::write(src.join("deep/big.rs"), lines(12)).unwrap();
    std::fs::write(src.join("edge.rs"), lines(11)).unwrap();
    std::fs::write(src.join("tests.rs"), lines(50)).unwrap();
    std::fs::write(src.join("tests/case.rs"), lines(50)).unwrap();
    std::fs::write(src.join("notes.txt"), lines(50)).unwrap();
    std::fs::create_dir_all(dir.path().join("demo/tests")).unwrap();
    std::fs::write(dir.path().join("demo/tests/it.rs"), lines(50)).unwrap();
    let got = oversized(dir.path(), 11);
    assert_eq!(got, [(src.join("deep/big.rs"), 12)]);
}

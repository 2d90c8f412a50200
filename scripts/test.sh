#!/usr/bin/env bash
# The whole test suite: format and lint checks, then every crate's tests (real containers,
# a real registry, CNI inside namespaces the tests create). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the test suite runs containers and mounts: run it as root" >&2
  exit 1
fi
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --all-targets --quiet
cargo test --workspace --no-fail-fast 2>&1

# A short run of every libFuzzer harness (docs/fuzzing.md); the corpora themselves are replayed
# by the cargo test of zlayer-fuzz-targets above. The instrumented build is cached in
# ~/.cache/zlayer-fuzz-target (the first one compiles every dependency with instrumentation: long on a small
# machine). FUZZ_SECONDS sets the length of each run; 0 skips the runs.
fuzz_seconds=${FUZZ_SECONDS:-20}
# Cached under the user's home, so a fresh clone rebuilds only the workspace's own crates.
fuzz_target_dir=${ZLAYER_FUZZ_TARGET_DIR:-$HOME/.cache/zlayer-fuzz-target}
fuzz_log=$(mktemp)
for target in $(fuzz/run.sh --list); do
  [ "$fuzz_seconds" = 0 ] && break
  # A fixed seed: the same inputs in the same order on every run, so a red suite is a
  # reproducible finding, not chance; the ten-minute runs (docs/fuzzing.md) explore further.
  if ! CARGO_TARGET_DIR="$fuzz_target_dir" nice -n 10 fuzz/run.sh "$target" "$fuzz_seconds" -seed=1 >"$fuzz_log" 2>&1; then
    tail -n 80 "$fuzz_log"
    echo "fuzz target $target failed: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -E '^stat::number_of_executed_units' "$fuzz_log" | tr -s ' ')"
  fuzz_passed=$((${fuzz_passed:-0} + 1))
done
rm -f "$fuzz_log"
echo "fuzz: ${fuzz_passed:-0} passed, 0 failed"

#!/usr/bin/env bash
# Builds a libFuzzer harness with coverage instrumentation on stable Rust and runs it.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]   fuzz TARGET for SECONDS (0: build only)
#   fuzz/run.sh --merge TARGET                        fold what runs found into fuzz/corpus/TARGET,
#                                                     keeping only inputs that add coverage
#   fuzz/run.sh --list                                the targets
#
# Inputs a run finds go to fuzz/artifacts/TARGET/found (not committed) and never into the
# repository's corpus directly; a crash is written to fuzz/artifacts/TARGET/crash-* and the
# script exits non-zero. Replay one input with: fuzz/run.sh TARGET 0 && $BIN FILE (printed).
#
# No nightly toolchain and no `-Z sanitizer`: the SanitizerCoverage pass libFuzzer needs is
# requested through stable `-C passes`/`-C llvm-args` (what cargo-fuzz passes on nightly, less
# ASan, which safe Rust code does not need to find panics). Build scripts are not instrumented
# because the flags apply only to the explicit `--target`.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
TARGETS=(unpack reference manifest spec api_json)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
merge=0
if [ "${1:-}" = --merge ]; then
  merge=1
  shift
fi
target=${1:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...] | --merge TARGET | --list}
if ! printf '%s\n' "${TARGETS[@]}" | grep -qx -- "$target"; then
  echo "unknown target $target (targets: ${TARGETS[*]})" >&2
  exit 2
fi
if [ $merge = 0 ]; then
  seconds=${2:?usage: fuzz/run.sh TARGET SECONDS}
  shift 2
else
  shift 1
fi

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet --target "$host" --target-dir "$target_dir" --bin "$target"
bin="$target_dir/$host/release/$target"
echo "harness: $bin"

# Longest input per target: layer tars need room for a few headers and data blocks.
case $target in
  unpack) max_len=65536 ;;
  *) max_len=16384 ;;
esac
corpus=corpus/$target
found=artifacts/$target/found
mkdir -p "$corpus" "$found"

if [ $merge = 1 ]; then
  # Minimise: the committed corpus plus what was found, reduced to a coverage-preserving set.
  merged=$(mktemp -d)
  "$bin" -merge=1 -max_len=$max_len "$merged" "$corpus" "$found"
  rm -f "$corpus"/*
  cp "$merged"/* "$corpus"/
  rm -rf "$merged"
  echo "$target: $(ls "$corpus" | wc -l) inputs, $(du -sk "$corpus" | cut -f1) KiB"
  exit 0
fi
[ "$seconds" = 0 ] && exit 0

# `found` first: libFuzzer writes new inputs into the first directory only.
exec "$bin" "$found" "$corpus" \
  -max_total_time="$seconds" -max_len=$max_len -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="artifacts/$target/" -print_final_stats=1 "$@"

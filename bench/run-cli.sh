#!/usr/bin/env bash
# Benchmark: `zlayer-agent run --rm IMAGE true` through the CLI and the daemon, against
# `runc run` of an equivalent bundle (same busybox rootfs, `true`, no terminal), measured in the
# same run with hyperfine; prints medians and the ratio (target: <= 1.0).
#
# Usage: bench/run-cli.sh [N]   (default 30; root; needs runc and hyperfine from Debian)
set -euo pipefail
N=${1:-30}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
[ "$(id -u)" = 0 ] || { echo "bench/run-cli.sh: run as root" >&2; exit 1; }
for t in runc hyperfine; do command -v $t >/dev/null || { echo "bench/run-cli.sh: $t not found (apt install $t)" >&2; exit 1; }; done
(cd "$HERE" && cargo build --release -q -p zlayer-cli -p zlayer-testkit --bins)
BIN=$TARGET/release/zlayer-agent
work=$(mktemp -d /tmp/zlayer-bench-run.XXXXXX)
sock=$work/agent.sock
"$BIN" --socket "$sock" daemon --root "$work/root" --state "$work/state" >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null
  # The daemon keeps its network-namespace directory mounted (as `ip netns` does).
  grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r umount -l
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do "$BIN" --socket "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
layout=$("$TARGET/release/zlayer-fixtures" build busybox --json | sed -n 's/.*"dir": *"\([^"]*\)".*/\1/p' | head -1)
image=$("$BIN" --socket "$sock" load -i "$layout" | sed -n 's/^Loaded image: //p' | head -1)

# The runc side: the same image's root filesystem and a default config running `true`.
mkdir -p "$work/bundle"
"$BIN" --socket "$sock" image unpack "$image" "$work/bundle/rootfs" >/dev/null
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)

# Warm both paths once (page cache, snapshot unpack), then measure.
"$BIN" --socket "$sock" run --rm --network none "$image" true
runc run -b "$work/bundle" zlayer-bench-runc
hyperfine -N --runs "$N" --warmup 3 --export-csv "$work/h.csv" \
  -n zlayer-agent "$BIN --socket $sock run --rm --network none $image true" \
  -n runc "runc run -b $work/bundle zlayer-bench-runc" >/dev/null
# CSV columns: command,mean,stddev,median,user,system,min,max (seconds).
awk -F, '$1=="zlayer-agent"{z=$4} $1=="runc"{r=$4}
  END{printf "run --rm true, medians of '"$N"' runs: zlayer-agent (CLI + daemon) %.1f ms, runc run %.1f ms, ratio %.2f\n", z*1000, r*1000, z/r}' "$work/h.csv"

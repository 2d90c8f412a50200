#!/usr/bin/env bash
# Benchmark: `zlayer-agent run --rm IMAGE true` through the CLI and the daemon, on the default
# bridge network (what a user gets without --network) and with --network none, against
# `runc run` of an equivalent bundle (same busybox rootfs, `true`, no terminal), measured in the
# same run with hyperfine; prints medians and the ratios (target: <= 1.0). The daemon runs in a
# network namespace of its own (`unshare -n`): its bridge, veths and firewall rules never touch
# the host's network.
#
# Usage: bench/run-cli.sh [N]   (default 30; root; needs runc and hyperfine from Debian, and the
#        CNI plugins: apt install containernetworking-plugins)
# ZLAYER_BENCH_BIN=path measures another build of zlayer-agent (ZLAYER_BENCH_NO_BUILD=1 skips
# the build).
set -euo pipefail
N=${1:-30}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
[ "$(id -u)" = 0 ] || { echo "bench/run-cli.sh: run as root" >&2; exit 1; }
for t in runc hyperfine unshare; do command -v $t >/dev/null || { echo "bench/run-cli.sh: $t not found (apt install $t)" >&2; exit 1; }; done
if [ -z "${ZLAYER_BENCH_NO_BUILD:-}" ]; then
  (cd "$HERE" && cargo build --release -q -p zlayer-cli -p zlayer-testkit --bins)
fi
BIN=${ZLAYER_BENCH_BIN:-$TARGET/release/zlayer-agent}
work=$(mktemp -d /tmp/zlayer-bench-run.XXXXXX)
sock=$work/agent.sock
unshare -n "$BIN" --socket "$sock" daemon --root "$work/root" --state "$work/state" >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null
  # The daemon keeps its containers' network namespaces mounted (as `ip netns` does).
  grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r umount -l || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do "$BIN" --socket "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
layout=$("${ZLAYER_BENCH_FIXTURES:-$TARGET/release/zlayer-fixtures}" build busybox --json | sed -n 's/.*"dir": *"\([^"]*\)".*/\1/p' | head -1)
image=$("$BIN" --socket "$sock" load -i "$layout" | sed -n 's/^Loaded image: //p' | head -1)

# The runc side: the same image's root filesystem and a default config running `true`.
mkdir -p "$work/bundle"
"$BIN" --socket "$sock" image unpack "$image" "$work/bundle/rootfs" >/dev/null
(cd "$work/bundle" && runc spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)

# Warm every path once (page cache, snapshot unpack, the default network's bridge), then measure.
"$BIN" --socket "$sock" run --rm --network none "$image" true
"$BIN" --socket "$sock" run --rm "$image" true
runc run -b "$work/bundle" zlayer-bench-runc
hyperfine -N --runs "$N" --warmup 3 --export-csv "$work/h.csv" \
  -n bridge "$BIN --socket $sock run --rm $image true" \
  -n none "$BIN --socket $sock run --rm --network none $image true" \
  -n runc "runc run -b $work/bundle zlayer-bench-runc" >/dev/null
# CSV columns: command,mean,stddev,median,user,system,min,max (seconds).
awk -F, '$1=="bridge"{b=$4} $1=="none"{z=$4} $1=="runc"{r=$4}
  END{printf "run --rm true, medians of '"$N"' runs: runc run %.1f ms\n", r*1000;
      printf "  zlayer-agent (CLI + daemon), default bridge network: %.1f ms, ratio %.2f\n", b*1000, b/r;
      printf "  zlayer-agent (CLI + daemon), --network none:         %.1f ms, ratio %.2f\n", z*1000, z/r}' "$work/h.csv"
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Benchmark: N idle containers (default 50) started with `zlayer-agent run -d` through a daemon
# of the release build, as a user starts them; prints the wall time and the PSS of each
# container's shim, the shipped `zlayer-agent shim` process (Pss: of /proc/PID/smaps_rollup; the
# shim is the parent of the container's init). The daemon runs in a network namespace of its own
# (`unshare -n`): nothing touches the host's network.
#
# Usage: bench/density.sh [N] [--keep]   (root; --keep leaves daemon and containers running for
#        inspection and prints how to stop them)
set -euo pipefail
N=${1:-50}
KEEP=${2:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
[ "$(id -u)" = 0 ] || { echo "bench/density.sh: run as root" >&2; exit 1; }
command -v unshare >/dev/null || { echo "bench/density.sh: unshare not found (util-linux)" >&2; exit 1; }
if [ -z "${ZLAYER_BENCH_NO_BUILD:-}" ]; then
  (cd "$HERE" && cargo build --release -q -p zlayer-cli -p zlayer-testkit --bins)
fi
BIN=${ZLAYER_BENCH_BIN:-$TARGET/release/zlayer-agent}
work=$(mktemp -d /tmp/zlayer-bench-density.XXXXXX)
sock=$work/agent.sock
unshare -n "$BIN" --socket "$sock" daemon --root "$work/root" --state "$work/state" >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  if [ "$KEEP" = --keep ]; then
    echo "kept: daemon pid $daemon, socket $sock; stop with: $BIN --socket $sock rm -f \$($BIN --socket $sock ps -aq); kill $daemon; rm -rf $work" >&2
    return
  fi
  "$BIN" --socket "$sock" ps -aq 2>/dev/null | xargs -r "$BIN" --socket "$sock" rm -f >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
  grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r umount -l || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do "$BIN" --socket "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
layout=$("${ZLAYER_BENCH_FIXTURES:-$TARGET/release/zlayer-fixtures}" build busybox --json | sed -n 's/.*"dir": *"\([^"]*\)".*/\1/p' | head -1)
image=$("$BIN" --socket "$sock" load -i "$layout" | sed -n 's/^Loaded image: //p' | head -1)

start=$(date +%s.%N)
for i in $(seq "$N"); do
  "$BIN" --socket "$sock" run -d --network none --name "d$i" "$image" sleep 100000 >/dev/null
done
end=$(date +%s.%N)
sleep 2 # let every shim settle into its idle loop
pss=()
for i in $(seq "$N"); do
  init=$("$BIN" --socket "$sock" inspect "d$i" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
  shim=$(awk '/^PPid:/{print $2}' "/proc/$init/status")
  grep -q shim "/proc/$shim/cmdline" || { echo "bench/density.sh: parent $shim of d$i's init is not a shim" >&2; exit 1; }
  pss+=("$(awk '/^Pss:/{print $2}' "/proc/$shim/smaps_rollup")")
  last_shim=$shim
done
printf '%s\n' "${pss[@]}" | sort -n | awk -v n="$N" -v s="$start" -v e="$end" '
  {v[NR]=$1; t+=$1}
  END{printf "density: %d `sleep` containers started with run -d in %.2f s (%.1f ms each)\n", n, e-s, (e-s)*1000/n;
      printf "  zlayer-agent shim PSS: mean %.0f KiB, median %d KiB, max %d KiB, total %.1f MiB over %d shims\n", t/NR, v[int((NR+1)/2)], v[NR], t/1024, NR}'
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg); one shim (pid $last_shim) by mapping, KiB: PSS, private dirty:"
awk '/^[0-9a-f]+-[0-9a-f]+ /{name=($6==""?"[anon]":$6) " " $2} /^Pss:/{p[name]+=$2} /^Private_Dirty:/{d[name]+=$2}
  END{for (k in p) if (p[k]>0) printf "    %6d %6d  %s\n", p[k], d[k], k}' "/proc/$last_shim/smaps" | sort -rn

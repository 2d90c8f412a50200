#!/bin/sh
# Services benchmark (issue 4): deploy one service of 100 `sleep` replicas and report
#   - the time from `deploy` until `services` shows 100 running replicas (target < 5 s, 2 cores)
#   - the daemon's RSS while idle with them running (target < 20 MB)
# Runs its own daemon on temp dirs (own socket), stops it by PID and removes everything after.
# Needs root and overlayfs. Uses release binaries (built here) unless ZLAYER_BIN is set.
#
# Usage: bench/deploy.sh [REPLICAS]
set -eu
cd "$(dirname "$0")/.."
n=${1:-100}
: "${CARGO_TARGET_DIR:=target}"
export CARGO_TARGET_DIR
if [ -z "${ZLAYER_BIN:-}" ]; then
  cargo build --release -q -p zlayer-cli -p zlayer-testkit --bins
  ZLAYER_BIN=$CARGO_TARGET_DIR/release/zlayer-agent
  FIX=$CARGO_TARGET_DIR/release/zlayer-fixtures
else
  FIX=${ZLAYER_FIXTURES_BIN:-$(dirname "$ZLAYER_BIN")/zlayer-fixtures}
fi
# Short: shim sockets live under it and unix socket paths are limited to 108 bytes.
dir=$(mktemp -d /tmp/zbd.XXXXXX)
sock=$dir/agent.sock
echo '{}' >"$dir/config.json"
"$ZLAYER_BIN" --socket "$sock" daemon --root "$dir/root" --state "$dir/state" \
  --config "$dir/config.json" >"$dir/daemon.log" 2>&1 &
pid=$!
cleanup() {
  "$ZLAYER_BIN" --socket "$sock" undeploy bench >/dev/null 2>&1 || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The daemon keeps its network-namespace directory mounted (as `ip netns` does).
  grep -o " $dir[^ ]*" /proc/mounts | sort -r | xargs -r umount -l
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
for _ in $(seq 100); do "$ZLAYER_BIN" --socket "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
agent() { "$ZLAYER_BIN" --socket "$sock" "$@"; }

layout=$("$FIX" build busybox --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["dir"])')
image=$(agent load -i "$layout" | sed -n 's/^Loaded image: //p' | head -1)

cat >"$dir/bench.yaml" <<YAML
version: v1
deployment: bench
services:
  sleeper:
    image: $image
    network: none
    # sleep, with a TERM trap so undeploy does not wait out the stop grace period per replica
    command: [sh, -c, "trap 'exit 0' TERM; sleep 100000 & wait"]
    replicas: $n
YAML

start=$(date +%s.%N)
agent deploy "$dir/bench.yaml" >/dev/null
tries=0
while :; do
  running=$(agent services --format json | python3 -c 'import json,sys; print(sum(s["running"] for s in json.load(sys.stdin)))')
  [ "$running" -ge "$n" ] && break
  tries=$((tries + 1))
  if [ "$tries" -gt 1200 ]; then
    echo "only $running of $n replicas running after a minute:" >&2
    agent services >&2
    tail -20 "$dir/daemon.log" >&2
    exit 1
  fi
  sleep 0.05
done
end=$(date +%s.%N)
echo "replicas running:        $running"
echo "time until all running:  $(echo "$end - $start" | bc) s"
sleep 5
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
anon_kb=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
file_kb=$(awk '/^RssFile/ {print $2}' "/proc/$pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
echo "idle daemon RSS:         $((rss_kb / 1024)) MB ($rss_kb kB) with $n replicas running"
# File-backed pages are the binary's code mapped by this process (shared with the shims).
echo "  of which anonymous:    $anon_kb kB; file-backed: $file_kb kB; threads: $threads"
t0=$(date +%s.%N)
agent undeploy bench >/dev/null
echo "undeploy (stop+remove):  $(echo "$(date +%s.%N) - $t0" | bc) s"

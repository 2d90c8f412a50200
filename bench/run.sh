#!/usr/bin/env bash
# Benchmark: start-to-exit latency of `true` through the zlayer-runtime library path
# (overlay mount + bundle + shim + wait + cleanup) against `runc run` of the same
# config.json on an overlay mounted the same way, N runs each, interleaved, medians.
# The CLI/daemon path (`zlayer-agent run --rm`) is measured by bench/run-cli.sh.
#
# Usage: bench/run.sh [N]   (default 30; needs root, busybox-static, runc)
set -euo pipefail
N=${1:-30}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
command -v runc >/dev/null || { echo "bench/run.sh: runc not found (apt install runc)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root" >&2; exit 1; }
(cd "$HERE" && cargo build --release -q -p zlayer-runtime --bin zlayer-runtime-bench)
exec "$TARGET/release/zlayer-runtime-bench" run "$N"

#!/usr/bin/env bash
# Benchmark: start N `sleep` containers (default 50) through the zlayer-runtime library
# path one after another; prints the wall time and the PSS per shim (smaps_rollup).
# The shim measured is the release build of the bench binary (same shim code as
# `zlayer-agent shim`; the agent binary is larger, its extra text is shared pages).
#
# Usage: bench/density.sh [N]
set -euo pipefail
N=${1:-50}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
[ "$(id -u)" = 0 ] || { echo "bench/density.sh: run as root" >&2; exit 1; }
(cd "$HERE" && cargo build --release -q -p zlayer-runtime --bin zlayer-runtime-bench)
exec "$TARGET/release/zlayer-runtime-bench" density "$N"

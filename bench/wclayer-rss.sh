#!/bin/sh
# Peak-memory benchmark of Windows layer conversion: a generated 1 GiB layer (gzip, streamed
# through a bounded pipe) goes through digest -> inflate -> DiffID -> convert -> import with the
# Linux host, and the test fails if the process's peak RSS (VmHWM) grows by 64 MB or more.
#
# Usage: bench/wclayer-rss.sh [MiB] [cargo profile flag, default --release]
#   bench/wclayer-rss.sh            # 1024 MiB, release build
#   bench/wclayer-rss.sh 1024 ""    # debug build (slower, reuses the test build cache)
set -eu
MIB=${1:-1024}
PROFILE=${2---release}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target}
# shellcheck disable=SC2086
WCLAYER_STREAM_MIB=$MIB cargo test $PROFILE -p zlayer-wclayer --test streaming -- --nocapture 2>&1 |
    grep -E 'wclayer streaming|test result|panicked|peak RSS'

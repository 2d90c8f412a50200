#!/bin/sh
# Network benchmark for zlayer-network (issue 5): extra sandbox start latency of a bridge network
# over none, and TCP throughput sandbox->sandbox over the bridge vs loopback, printed as ratios.
#
# Runs entirely inside a private network + mount namespace made here (unshare), so the host's
# interfaces, routes and firewall are never touched; everything vanishes when it exits.
# Needs root, util-linux unshare, iptables, Debian's containernetworking-plugins.
#
# Usage: bench/network.sh [--iterations N] [--megabytes M]
set -eu
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=target}"
export CARGO_TARGET_DIR
cargo build --release -q -p zlayer-network --example netbench
exec env ZLAYER_NETBENCH_INSIDE=1 unshare --net --mount --propagation private -- \
    sh -c 'ip link set lo up && exec "$0" "$@"' "$CARGO_TARGET_DIR/release/examples/netbench" "$@"

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

#!/usr/bin/env bash
# Installs what zlayer-agent needs to build, run and test on Debian 12 (run as root).
set -euo pipefail

packages=(
  build-essential pkg-config cmake libseccomp-dev   # building (libcontainer links libseccomp; zlib-ng needs cmake)
  busybox-static                              # the fixture images are made from it
  docker-registry skopeo umoci runc           # tests: a local registry; benchmarks: peers
  containernetworking-plugins iproute2 iptables  # CNI networking
  hyperfine curl ca-certificates git
  python3-venv                                # tests: schemathesis (below) runs in a venv
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's docker-registry package starts a registry service on :5000 where an init system runs;
# our tests start their own on free loopback ports and never use that one.

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
cargo --version

# schemathesis (PyPI) checks a live daemon against its OpenAPI document
# (crates/cli/tests/openapi.rs). Pinned; installed in a venv of its own under ~/.cache.
SCHEMATHESIS_VERSION=4.32.5
venv="$HOME/.cache/zlayer-schemathesis"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

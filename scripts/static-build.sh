#!/usr/bin/env bash
# Builds static larder binaries and lays out the image's build context:
#
#   scripts/static-build.sh [ARCH...]      # amd64, arm64; default: this machine's
#
#   target/image/linux/<arch>/larder       static (glibc, +crt-static), stripped
#   target/image/ca-certificates.crt       this machine's CA bundle (Debian: ca-certificates)
#   target/image/tmp.tar                   an empty /tmp (mode 1777): COPY would not keep the mode
#
# The Dockerfile only copies these files, so the image build pulls nothing and
# runs nothing, and one Dockerfile makes every platform of a multi-arch image.
#
# Building for another architecture than the machine's (a release pipeline on
# amd64 building arm64) needs, on Debian:
#   rustup target add aarch64-unknown-linux-gnu
#   apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# and this script sets the linker, C compiler and strip for it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONTEXT=${LARDER_IMAGE_CONTEXT:-$ROOT/target/image}
CA_BUNDLE=${LARDER_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# Cargo profile: `release` for published images; scripts/test.sh uses
# `test-image` (the same code, quicker to build).
PROFILE=${LARDER_IMAGE_PROFILE:-release}

die() { echo "static-build: $*" >&2; exit 1; }

native_arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) die "unsupported machine $(uname -m)" ;;
  esac
}

triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    *) die "unknown architecture '$1'; use amd64 or arm64" ;;
  esac
}

build() {
  local arch=$1 triple env_triple strip=strip
  triple=$(triple_of "$arch")
  env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  if [ "$arch" != "$(native_arch)" ]; then
    local gnu=${triple%%-*}-linux-gnu
    command -v "$gnu-gcc" >/dev/null || die "cross-building $arch needs $gnu-gcc (Debian: gcc-$gnu and libc6-dev-${arch}-cross)"
    export "CARGO_TARGET_${env_triple}_LINKER=$gnu-gcc"
    export "CC_${triple//-/_}=$gnu-gcc" "AR_${triple//-/_}=$gnu-ar"
    strip=$gnu-strip
  fi
  echo "static-build: building larder for linux/$arch ($triple)" >&2
  # --target keeps these objects apart from the host build's, which has no +crt-static.
  (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile "$PROFILE" --locked --target "$triple")
  local out=$CONTEXT/linux/$arch/larder
  mkdir -p "$(dirname "$out")"
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/$triple/$PROFILE/larder" "$out"
  "$strip" "$out"
  # A scratch image has no dynamic loader and no shared libraries.
  if readelf -lW "$out" | grep -q INTERP || readelf -dW "$out" | grep -q NEEDED; then
    die "$out is dynamically linked: $(readelf -dW "$out" | grep NEEDED | tr -s ' ')"
  fi
  echo "static-build: $out: $(du -h "$out" | cut -f1), static" >&2
}

[ -s "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (Debian: apt-get install ca-certificates)"
mkdir -p "$CONTEXT"
rm -rf "$CONTEXT/tmp"
scratch=$(mktemp -d)
mkdir -m 1777 "$scratch/tmp"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$CONTEXT/tmp.tar" -C "$scratch" tmp
rm -rf "$scratch"
cp "$CA_BUNDLE" "$CONTEXT/ca-certificates.crt"
[ $# -gt 0 ] || set -- "$(native_arch)"
for arch in "$@"; do
  build "$arch"
done

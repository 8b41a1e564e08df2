#!/usr/bin/env bash
# Builds larder's container image for this machine from a checkout:
#
#   scripts/image.sh [TAG]        # default larder:dev
#
# It builds a static binary (scripts/static-build.sh) and then the image from
# the Dockerfile, which starts FROM scratch: no base image is pulled. Release
# pipelines build both architectures the same way and push a multi-arch image
# (see .drone.yml and .woodpecker.yaml).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${1:-larder:dev}
CONTEXT=${LARDER_IMAGE_CONTEXT:-$ROOT/target/image}
export LARDER_IMAGE_CONTEXT=$CONTEXT

case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) echo "image: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
command -v docker >/dev/null || { echo "image: docker is not installed" >&2; exit 1; }

"$ROOT/scripts/static-build.sh" "$ARCH"

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
LICENSES=$(sed -n 's/^license = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$REVISION" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then
  REVISION="$REVISION-dirty"
fi

# TARGETARCH is set by BuildKit from --platform; the classic builder needs it given.
docker build --quiet \
  --build-arg "TARGETARCH=$ARCH" \
  --build-arg "VERSION=$VERSION" \
  --build-arg "REVISION=$REVISION" \
  --build-arg "LICENSES=${LICENSES:-NOASSERTION}" \
  -t "$TAG" -f "$ROOT/Dockerfile" "$CONTEXT" >/dev/null
SIZE=$(docker image inspect -f '{{.Size}}' "$TAG")
echo "image: built $TAG (linux/$ARCH, larder $VERSION, $REVISION): $((SIZE / 1024 / 1024)) MiB ($SIZE bytes)" >&2

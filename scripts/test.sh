#!/usr/bin/env bash
# Runs all of larder's tests against real servers, from a fresh machine:
# installs what the tests need, starts the storage servers and Docker, builds
# the image the container tests run (scripts/image.sh), runs the tests, and
# stops the servers again. Extra arguments go to `cargo test`.
#
# LARDER_TEST_IMAGE=<tag> runs the container tests against an image built
# before, instead of building larder:test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ci-services.sh install
scripts/ci-services.sh start
trap 'scripts/ci-services.sh stop' EXIT
# shellcheck source=/dev/null
source target/ci-run/env
if [ -z "${LARDER_TEST_IMAGE:-}" ]; then
  export LARDER_TEST_IMAGE=larder:test
  LARDER_IMAGE_PROFILE=test-image scripts/image.sh "$LARDER_TEST_IMAGE"
fi
cargo test --locked "$@"

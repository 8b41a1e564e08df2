#!/usr/bin/env bash
# Runs all of larder's tests against real servers, from a fresh machine:
# installs what the tests need, starts the storage servers, runs the tests,
# and stops the servers again. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ci-services.sh install
scripts/ci-services.sh start
trap 'scripts/ci-services.sh stop' EXIT
# shellcheck source=/dev/null
source target/ci-run/env
cargo test --locked "$@"

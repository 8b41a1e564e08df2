#!/usr/bin/env bash
# Runs larder's main job locally, as a pipeline would, on the filesystem
# backend: builds larder, makes a small Go-module-cache-like workspace,
# stores it (rebuild), then restores it into a fresh workspace and checks
# that the two trees are identical. Needs only cargo (Rust 1.89 or newer,
# see rust-version in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x target/release/larder ]; then
  echo "== building larder (release; about 5 minutes on 2 cores the first time, cargo's progress below)"
fi
started=$SECONDS
cargo build --release
echo "== built in $((SECONDS - started)) s"
LARDER=$PWD/target/release/larder
DEMO=$(mktemp -d /tmp/larder-demo.XXXXXX)
trap 'chmod -R u+w "$DEMO"; rm -rf "$DEMO"' EXIT

# A workspace with a read-only module tree, as `go mod download` leaves it.
mkdir -p "$DEMO/first/pkg.mod/example.com/lib@v1.0.0" "$DEMO/second"
echo 'module example.com/app' > "$DEMO/first/go.mod"
echo 'example.com/lib v1.0.0 h1:demo=' > "$DEMO/first/go.sum"
echo 'package lib' > "$DEMO/first/pkg.mod/example.com/lib@v1.0.0/lib.go"
chmod 444 "$DEMO/first/pkg.mod/example.com/lib@v1.0.0/lib.go"
chmod 555 "$DEMO/first/pkg.mod/example.com/lib@v1.0.0"
cp "$DEMO/first/go.mod" "$DEMO/first/go.sum" "$DEMO/second/"

# The settings a pipeline's `settings:` block would pass.
export PLUGIN_BACKEND=filesystem
export PLUGIN_FILESYSTEM_CACHE_ROOT=$DEMO/cache
export PLUGIN_MOUNT=pkg.mod
export PLUGIN_CACHE_KEY='gomod-{{ checksum "go.sum" }}'
export DRONE_REPO=octocat/hello-world DRONE_COMMIT_BRANCH=main

echo "== rebuild (first pipeline run, after the build)"
DRONE_WORKSPACE=$DEMO/first PLUGIN_REBUILD=true "$LARDER"
echo "== rebuild again: the key is stored and nothing changed"
DRONE_WORKSPACE=$DEMO/first PLUGIN_REBUILD=true "$LARDER"
echo "== restore (next pipeline run, fresh workspace)"
DRONE_WORKSPACE=$DEMO/second PLUGIN_RESTORE=true "$LARDER"

diff -r "$DEMO/first/pkg.mod" "$DEMO/second/pkg.mod"
echo "== the restored tree is identical; entries in the cache:"
find "$DEMO/cache" -type f

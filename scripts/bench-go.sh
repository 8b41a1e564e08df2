#!/usr/bin/env bash
# Go's module cache, cached two ways, on a generated module world that
# builds with no network (scripts/bench-go-corpus.py): the whole GOMODCACHE
# (extracted trees and downloads) against only its cache/download (the
# zips, which Go extracts as the build needs them, with GOPROXY=off).
# Prints each way's entry size and, medians of --runs, the restore and the
# `go build` that follows, beside a build that downloads every module from
# a file:// proxy (no cache at all).
#
#   scripts/bench-go.sh [--modules 200] [--runs 3]
#
# Every build starts with the same warm GOCACHE (as with docs/go.md's build
# cache restored), so none compiles anything: the ways differ only in what
# is left for Go to fetch and extract before it can hash the sources.
# LARDER_BENCH_DIR (default target/bench) holds it all, under go/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODULES=200 RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --modules) MODULES=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: $0 [--modules N] [--runs N]" >&2; exit 2 ;;
  esac
done
command -v go >/dev/null || { echo "bench-go: the Go toolchain is missing (apt-get install golang-go)" >&2; exit 1; }

WORK=${LARDER_BENCH_DIR:-$ROOT/target/bench}/go
CORPUS=$WORK/corpus-$MODULES
WS=$WORK/ws
STORE=$WORK/cache
RESULTS=$WORK/results.tsv
mkdir -p "$WORK"
cargo build --release --locked --quiet
LARDER=$ROOT/target/release/larder

wipe() { [ -e "$1" ] && chmod -R u+w "$1" && rm -rf "$1"; mkdir -p "$1"; }
if [ ! -d "$CORPUS/proxy" ]; then
  echo "bench-go: generating $MODULES modules" >&2
  wipe "$CORPUS.tmp"
  python3 scripts/bench-go-corpus.py "$CORPUS.tmp" --modules "$MODULES"
  mv "$CORPUS.tmp" "$CORPUS"
fi

gocmd() { # proxy args...: go in the workspace, its caches inside it
  local proxy=$1; shift
  (cd "$WS" && env GOMODCACHE="$WS/pkg.mod" GOCACHE="$WS/.gocache" GOPATH="$WS/.gopath" HOME="$WS" \
    GOPROXY="$proxy" GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local go "$@")
}
larder() { # mode mount key
  env PLUGIN_"$1"=true PLUGIN_MOUNT="$2" PLUGIN_CACHE_KEY="$3" PLUGIN_BACKEND=filesystem \
    PLUGIN_FILESYSTEM_CACHE_ROOT="$STORE" PLUGIN_REMOTE_ROOT=go PLUGIN_EXIT_CODE=true \
    PLUGIN_OVERRIDE=true PLUGIN_ENTRY_FORMAT=archive DRONE_WORKSPACE="$WS" "$LARDER" >/dev/null
}
fresh() {
  wipe "$WS"
  cp "$CORPUS/app/go.mod" "$CORPUS/app/main.go" "$WS/"
  [ -f "$WORK/go.sum" ] && cp "$WORK/go.sum" "$WS/"
  [ -d "$WORK/gocache" ] && cp -a "$WORK/gocache" "$WS/.gocache"
  true
}
seconds() { # command...: runs it, prints its wall seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk "BEGIN { print $t1 - $t0 }"
}

# Fill the module cache once from the proxy, and store it both ways.
rm -rf "$WORK/go.sum" "$WORK/gocache"
fresh
gocmd "file://$CORPUS/proxy" mod download all
cp "$WS/go.sum" "$WORK/go.sum"
echo "bench-go: compiling once for the warm GOCACHE" >&2
gocmd off build -o app .
cp -a "$WS/.gocache" "$WORK/gocache"
wipe "$STORE"
larder REBUILD pkg.mod full
larder REBUILD pkg.mod/cache/download downloads
full_bytes=$(stat -c %s "$STORE/go/full.tar.gz")
downloads_bytes=$(stat -c %s "$STORE/go/downloads.tar.gz")
tree_bytes=$(du -sb "$WS/pkg.mod" | cut -f1)

rm -f "$RESULTS"
for run in $(seq 1 "$RUNS"); do
  echo "bench-go: run $run of $RUNS" >&2
  fresh
  echo -e "proxy-build\t$(seconds gocmd "file://$CORPUS/proxy" build -o app .)" >>"$RESULTS"
  for way in full downloads; do
    mount=pkg.mod; [ "$way" = downloads ] && mount=pkg.mod/cache/download
    fresh
    echo -e "$way-restore\t$(seconds larder RESTORE "$mount" "$way")" >>"$RESULTS"
    echo -e "$way-build\t$(seconds gocmd off build -o app .)" >>"$RESULTS"
  done
done

python3 - "$RESULTS" "$MODULES" "$RUNS" "$tree_bytes" "$full_bytes" "$downloads_bytes" <<'PY'
import statistics, sys
results, modules, runs, tree, full, downloads = sys.argv[1:]
times = {}
for line in open(results):
    name, secs = line.split("\t")
    times.setdefault(name, []).append(float(secs))
med = lambda k: statistics.median(times[k])
MB = 1e6
print(f"\n{modules} generated modules; GOMODCACHE {int(tree) / MB:.1f} MB on disk; filesystem backend, gzip; medians of {runs} runs")
print("every build starts with the same warm GOCACHE (it compiles nothing); restore + build is what a pipeline waits for\n")
print("| way | entry MB | restore s | go build s | restore + build s |")
print("|---|---|---|---|---|")
print(f"| no cache: GOPROXY=file:// | - | - | {med('proxy-build'):.2f} | {med('proxy-build'):.2f} |")
for way, size, label in (("full", full, "whole GOMODCACHE"), ("downloads", downloads, "cache/download only, GOPROXY=off")):
    r, b = med(f"{way}-restore"), med(f"{way}-build")
    print(f"| {label} | {int(size) / MB:.1f} | {r:.2f} | {b:.2f} | {r + b:.2f} |")
PY

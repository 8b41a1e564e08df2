#!/usr/bin/env bash
# Benchmarks larder against the GNU pipelines, in the same run, on the same
# corpus (a generated Go module cache), and prints medians and ratios.
#
#   scripts/bench.sh [--size-mb 600] [--files 15000] [--runs 5] [--only fs|s3] [--levels]
#                    [--incremental]
#
# Rebuild is compared with `tar -cf - | zstd -3 -T2` and `tar -cf - | pigz -6 -p2`,
# restore with `zstd -dc | tar -x` and `gzip -dc | tar -x`, on the filesystem
# backend and on S3 (s3s-fs on 127.0.0.1). Ratios below 1 mean larder is faster.
# With --levels it instead times larder's rebuild (filesystem backend) at
# several compression levels and prints time and entry size for each: the
# measurements behind the default levels. With --incremental it runs the
# scenario of chunked entries: store the corpus, the same tree under a new
# key, then ten keys each with one more module (about 1 % of the bytes, a
# module tree and its cache/download files, as `go get` adds them), and
# restores; it reports bytes uploaded, objects written, seconds, storage
# used and requests, against whole archives (zstd) in the same run. Peak RSS comes from /usr/bin/time. Machines here are noisy: compare ratios.
# LARDER_BENCH_DIR (default target/bench) holds the corpus, outputs and the
# S3 server's data; point it at a tmpfs (/dev/shm/...) to measure without the
# disk, which on some machines dominates and varies from run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZE_MB=600 FILES=15000 RUNS=5 ONLY=all LEVELS='' INCREMENTAL=''
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --levels) LEVELS=1 ONLY=fs; shift ;;
    --incremental) INCREMENTAL=1; shift ;;
    *) echo "usage: $0 [--size-mb N] [--files N] [--runs N] [--only fs|s3] [--levels] [--incremental]" >&2; exit 2 ;;
  esac
done

WORK=${LARDER_BENCH_DIR:-$ROOT/target/bench}
CORPUS=$WORK/corpus-$SIZE_MB-$FILES
OUT=$WORK/out
RESULTS=$WORK/results.tsv
mkdir -p "$WORK"

command -v pigz >/dev/null || { echo "bench: installing pigz" >&2; apt-get install -y -qq pigz >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq pigz >/dev/null; }; }
for tool in tar zstd gzip pigz /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

cargo build --release --locked --quiet
LARDER=$ROOT/target/release/larder

if [ ! -d "$CORPUS/pkg.mod" ]; then
  echo "bench: generating the corpus ($SIZE_MB MB, $FILES files)" >&2
  rm -rf "$CORPUS.tmp"
  python3 scripts/bench-corpus.py "$CORPUS.tmp" --size-mb "$SIZE_MB" --files "$FILES" >&2
  mv "$CORPUS.tmp" "$CORPUS"
fi

if [ "$ONLY" != fs ]; then
  # The S3 server keeps its data beside the corpus, on the same disk.
  export LARDER_RUN=$WORK/run
  scripts/ci-services.sh install >&2
  scripts/ci-services.sh start >&2
  trap 'scripts/ci-services.sh stop >&2' EXIT
  # shellcheck source=/dev/null
  source "$LARDER_RUN/env"
fi

wipe() { [ -e "$1" ] && chmod -R u+w "$1" && rm -rf "$1"; mkdir -p "$1"; }

# measure NAME COMMAND...: runs once, appends "name seconds maxrss_kib".
measure() {
  local name=$1; shift
  sync
  local t0 t1 rss cpu server0 server1
  server0=$(server_cpu)
  t0=$(date +%s.%N)
  if ! /usr/bin/time -f "%M %U %S" "$@" >/dev/null 2>"$WORK/stderr"; then
    echo "bench: $name failed:" >&2; cat "$WORK/stderr" >&2; exit 1
  fi
  t1=$(date +%s.%N)
  server1=$(server_cpu)
  read -r rss cpu <<<"$(tail -1 "$WORK/stderr" | awk '{ print $1, $2 + $3 }')"
  echo -e "$name\t$(awk "BEGIN { print $t1 - $t0 }")\t$rss\t$cpu\t$(awk "BEGIN { print ($server1 - $server0) / 100 }")" >>"$RESULTS"
}

# CPU seconds (in ticks of 1/100 s) the S3 server has used so far: on a
# 2-core machine it competes with larder for the same cores.
server_cpu() {
  local pid
  pid=$(cat "${LARDER_RUN:-/nonexistent}/s3s.pid" 2>/dev/null) || { echo 0; return; }
  awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0
}

larder_env() { # backend-specific settings for larder, as a pipeline would pass them
  local backend=$1
  # Whole archives (what GNU tar is measured against); the chunked runs set
  # PLUGIN_ENTRY_FORMAT=chunked after this, which env takes last.
  echo PLUGIN_MOUNT=pkg.mod PLUGIN_REMOTE_ROOT=bench PLUGIN_EXIT_CODE=true PLUGIN_ENTRY_FORMAT=archive
  if [ "$backend" = fs ]; then
    echo PLUGIN_BACKEND=filesystem PLUGIN_FILESYSTEM_CACHE_ROOT="$OUT/cache"
  else
    echo PLUGIN_BACKEND=s3 PLUGIN_BUCKET="$LARDER_TEST_S3_BUCKET" PLUGIN_ENDPOINT="$LARDER_TEST_S3_ENDPOINT" \
      PLUGIN_PATH_STYLE=true PLUGIN_ACCESS_KEY="$LARDER_TEST_S3_ACCESS_KEY" PLUGIN_SECRET_KEY="$LARDER_TEST_S3_SECRET_KEY"
  fi
}

if [ -n "$INCREMENTAL" ]; then
  # The corpus with ten modules held back (each about 1 % of the bytes).
  INC=$WORK/inc-$SIZE_MB-$FILES
  if [ ! -d "$INC/held" ]; then
    echo "bench: holding back ten modules of a copy of the corpus" >&2
    wipe "$INC.tmp"
    cp -a "$CORPUS/pkg.mod" "$INC.tmp/pkg.mod"
    python3 - "$INC.tmp" <<'PY'
import os, shutil, sys
root = sys.argv[1]
mod = os.path.join(root, "pkg.mod")
def size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
total = size(mod)
modules = []
for org in sorted(os.listdir(os.path.join(mod, "github.com"))):
    for name in sorted(os.listdir(os.path.join(mod, "github.com", org))):
        tree = os.path.join("github.com", org, name)
        download = os.path.join("cache/download/github.com", org, name.split("@")[0])
        modules.append((abs(size(os.path.join(mod, tree)) + size(os.path.join(mod, download)) - total / 100), tree, download))
modules.sort()
for n, (_, tree, download) in enumerate(modules[:10], 1):
    for part in (tree, download):
        target = os.path.join(root, "held", str(n), part)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.chmod(os.path.dirname(os.path.join(mod, part)), 0o755)
        shutil.move(os.path.join(mod, part), target)
    print(f"held back {tree}", file=sys.stderr)
PY
    mv "$INC.tmp" "$INC"
  fi
  rm -f "$RESULTS"
  wipe "$OUT/cache"
  METRICS=$WORK/metrics.tsv
  rm -f "$METRICS"
  backends=(fs s3); [ "$ONLY" = fs ] && backends=(fs); [ "$ONLY" = s3 ] && backends=(s3)
  RESULT=$WORK/result.json
  # run NAME ENV...: measures larder with the backend's settings and keeps its summary.
  run() {
    local name=$1; shift
    # shellcheck disable=SC2046
    measure "$name" env $(larder_env "$backend") PLUGIN_REMOTE_ROOT="$root" PLUGIN_RESULT_FILE="$RESULT" "$@" "$LARDER"
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
for k in ("uploaded_bytes", "objects_written", "stored_bytes", "chunks", "chunks_cached", "requests"):
    if d.get(k) is not None: print(f"{sys.argv[2]}:{k}\t{d[k]}")' "$RESULT" "$name" >>"$METRICS"
  }
  used() { # bytes stored under the run's root
    local dir
    if [ "$backend" = fs ]; then dir=$OUT/cache/$root; else dir=$LARDER_RUN/s3-data/$LARDER_TEST_S3_BUCKET/$root; fi
    du -sb "$dir" | cut -f1
  }
  for run_no in $(seq 1 "$RUNS"); do
    for backend in "${backends[@]}"; do
      echo "bench: incremental, $backend, run $run_no of $RUNS" >&2
      # A folder of its own for each run: nothing stored before counts.
      stamp=$(date +%s%N)
      root=inc-$backend-$run_no-$stamp
      ws=$OUT/incws
      wipe "$ws"
      cp -a "$INC/pkg.mod" "$ws/pkg.mod"
      chunked=(PLUGIN_REBUILD=true PLUGIN_ENTRY_FORMAT=chunked DRONE_WORKSPACE="$ws")
      run "$backend-archive-base" PLUGIN_REBUILD=true PLUGIN_ARCHIVE_FORMAT=zstd PLUGIN_CACHE_KEY=a0 DRONE_WORKSPACE="$ws"
      echo -e "$backend-archive-entry:bytes\t$(used)" >>"$METRICS"
      root=inc-$backend-$run_no-$stamp-c
      run "$backend-chunked-base" "${chunked[@]}" PLUGIN_CACHE_KEY=k0
      run "$backend-chunked-same" "${chunked[@]}" PLUGIN_CACHE_KEY=k0b
      for n in $(seq 1 10); do
        cp -a "$INC/held/$n/." "$ws/pkg.mod/"
        run "$backend-chunked-add$n" "${chunked[@]}" PLUGIN_CACHE_KEY="k$n"
      done
      echo -e "$backend-chunked-used:bytes\t$(used)" >>"$METRICS"
      wipe "$OUT/x"
      run "$backend-chunked-restore" PLUGIN_RESTORE=true PLUGIN_CACHE_KEY=k10 DRONE_WORKSPACE="$OUT/x"
      root=inc-$backend-$run_no-$stamp
      run "$backend-archive-last" PLUGIN_REBUILD=true PLUGIN_ARCHIVE_FORMAT=zstd PLUGIN_CACHE_KEY=a10 DRONE_WORKSPACE="$ws"
      wipe "$OUT/x"
      run "$backend-archive-restore" PLUGIN_RESTORE=true PLUGIN_CACHE_KEY=a10 DRONE_WORKSPACE="$OUT/x"
      root=inc-$backend-$run_no-$stamp-c
      wipe "$OUT/chunk-cache"
      wipe "$OUT/x"
      run "$backend-cache-cold" PLUGIN_RESTORE=true PLUGIN_CACHE_KEY=k10 PLUGIN_CHUNK_CACHE="$OUT/chunk-cache" DRONE_WORKSPACE="$OUT/x"
      wipe "$OUT/x"
      run "$backend-cache-warm" PLUGIN_RESTORE=true PLUGIN_CACHE_KEY=k10 PLUGIN_CHUNK_CACHE="$OUT/chunk-cache" DRONE_WORKSPACE="$OUT/x"
    done
  done
  wipe "$OUT/x"
  python3 - "$RESULTS" "$METRICS" "$RUNS" <<'PY'
import statistics, sys
results, metrics, runs = sys.argv[1:]
secs, rss, vals = {}, {}, {}
for line in open(results):
    name, s, r, *_ = line.split("\t")
    secs.setdefault(name, []).append(float(s))
    rss.setdefault(name, []).append(int(r))
for line in open(metrics):
    key, v = line.split("\t")
    vals.setdefault(key, []).append(float(v))
med = lambda d, k: statistics.median(d[k]) if k in d else float("nan")
MB = 1e6
print(f"\nincremental scenario, medians of {runs} runs; 'entry' = one whole zstd archive of the corpus")
for b in ("fs", "s3"):
    if f"{b}-chunked-base" not in secs:
        continue
    entry = med(vals, f"{b}-archive-entry:bytes")
    base_up = med(vals, f"{b}-chunked-base:uploaded_bytes")
    print(f"\n{b}: whole entry {entry / MB:.1f} MB; chunked entry {base_up / MB:.1f} MB ({base_up / entry:.2f}x)\n")
    print("| step | uploaded MB | % of entry | objects | s | vs archive rebuild |")
    print("|---|---|---|---|---|---|")
    arch = med(secs, f"{b}-archive-base")
    print(f"| archive (zstd), today | {entry / MB:.1f} | 100 % | 1 | {arch:.2f} | 1.00 |")
    for step in ["base", "same"] + [f"add{n}" for n in range(1, 11)]:
        k = f"{b}-chunked-{step}"
        up = med(vals, f"{k}:uploaded_bytes")
        print(f"| chunked {step} | {up / MB:.2f} | {100 * up / entry:.1f} % | "
              f"{med(vals, f'{k}:objects_written'):.0f} | {med(secs, k):.2f} | {med(secs, k) / arch:.2f} |")
    used = med(vals, f"{b}-chunked-used:bytes")
    print(f"\nstorage after 12 keys (base, same, +10 modules): {used / MB:.1f} MB = {used / entry:.2f}x one whole entry")
    cr, ar = med(secs, f"{b}-chunked-restore"), med(secs, f"{b}-archive-restore")
    print(f"restore: chunked {cr:.2f} s (peak RSS {max(rss[f'{b}-chunked-restore']) / 1024:.0f} MiB, "
          f"{med(vals, f'{b}-chunked-restore:chunks'):.0f} chunks in {med(vals, f'{b}-chunked-restore:requests'):.0f} requests) vs archive {ar:.2f} s "
          f"(peak RSS {max(rss[f'{b}-archive-restore']) / 1024:.0f} MiB): {cr / ar:.2f}x")
    warm = med(secs, f"{b}-cache-warm")
    print(f"restore with a warm chunk cache: {warm:.2f} s = {warm / cr:.2f}x the chunked restore from {b} "
          f"({med(vals, f'{b}-cache-warm:chunks_cached'):.0f} of {med(vals, f'{b}-cache-warm:chunks'):.0f} chunks from the cache)")
PY
  exit 0
fi

if [ -n "$LEVELS" ]; then
  # Level by level: the time of a rebuild and the size of what it stored.
  rm -f "$RESULTS"
  wipe "$OUT"
  SIZES=$WORK/sizes.tsv
  rm -f "$SIZES"
  for run in $(seq 1 "$RUNS"); do
    echo "bench: levels, run $run of $RUNS" >&2
    for spec in tar:0 gzip:1 gzip:4 gzip:6 gzip:9 zstd:1 zstd:3 zstd:6 zstd:9; do
      format=${spec%:*} level=${spec#*:}
      # shellcheck disable=SC2046
      measure "$format-$level" env $(larder_env fs) PLUGIN_REBUILD=true PLUGIN_OVERRIDE=true \
        PLUGIN_ARCHIVE_FORMAT="$format" PLUGIN_COMPRESSION_LEVEL="$level" PLUGIN_CACHE_KEY="$format-$level" \
        DRONE_WORKSPACE="$CORPUS" "$LARDER"
      echo -e "$format-$level\t$(stat -c %s "$OUT/cache/bench/$format-$level".tar*)" >>"$SIZES"
    done
  done
  python3 - "$RESULTS" "$SIZES" "$SIZE_MB" "$FILES" "$RUNS" <<'PY'
import statistics, sys
results, sizes, size, files, runs = sys.argv[1:]
times, bytes_ = {}, {}
for line in open(results):
    name, secs, *_ = line.split("\t")
    times.setdefault(name, []).append(float(secs))
for line in open(sizes):
    name, n = line.split("\t")
    bytes_[name] = int(n)
tar = bytes_["tar-0"]
print(f"\ncorpus: {size} MB, {files} files; larder rebuild on the filesystem backend; medians of {runs} runs")
print(f"size = entry size / uncompressed tar ({tar / 1e6:.0f} MB)\n")
print("| format | level | s | MB | size |")
print("|---|---|---|---|---|")
for name, secs in times.items():
    fmt, level = name.split("-")
    print(f"| {fmt} | {level if fmt != 'tar' else '-'} | {statistics.median(secs):.2f} | "
          f"{bytes_[name] / 1e6:.0f} | {100 * bytes_[name] / tar:.1f} % |")
PY
  exit 0
fi

rm -f "$RESULTS"
wipe "$OUT"
backends=(fs s3); [ "$ONLY" = fs ] && backends=(fs); [ "$ONLY" = s3 ] && backends=(s3)
for run in $(seq 1 "$RUNS"); do
  echo "bench: run $run of $RUNS" >&2
  # GNU pipelines.
  measure gnu-rebuild-zstd bash -c "tar -cf - -C '$CORPUS' pkg.mod | zstd -q -3 -T2 -o '$OUT/gnu.tar.zst' -f"
  measure gnu-rebuild-gzip bash -c "tar -cf - -C '$CORPUS' pkg.mod | pigz -6 -p2 > '$OUT/gnu.tar.gz'"
  wipe "$OUT/x"
  measure gnu-restore-zstd bash -c "zstd -dc '$OUT/gnu.tar.zst' | tar -x -C '$OUT/x'"
  wipe "$OUT/x"
  measure gnu-restore-gzip bash -c "gzip -dc '$OUT/gnu.tar.gz' | tar -x -C '$OUT/x'"
  # larder, as a pipeline runs it.
  for backend in "${backends[@]}"; do
    for format in zstd gzip; do
      # shellcheck disable=SC2046
      measure "larder-$backend-rebuild-$format" env $(larder_env "$backend") PLUGIN_REBUILD=true \
        PLUGIN_OVERRIDE=true PLUGIN_ARCHIVE_FORMAT=$format PLUGIN_CACHE_KEY=$format DRONE_WORKSPACE="$CORPUS" "$LARDER"
      wipe "$OUT/x"
      # shellcheck disable=SC2046
      measure "larder-$backend-restore-$format" env $(larder_env "$backend") PLUGIN_RESTORE=true \
        PLUGIN_CACHE_KEY=$format DRONE_WORKSPACE="$OUT/x" "$LARDER"
    done
    # The same level as the baseline, for a like-for-like comparison.
    # shellcheck disable=SC2046
    measure "larder-$backend-rebuild-gzip6" env $(larder_env "$backend") PLUGIN_REBUILD=true \
      PLUGIN_OVERRIDE=true PLUGIN_ARCHIVE_FORMAT=gzip PLUGIN_COMPRESSION_LEVEL=6 PLUGIN_CACHE_KEY=gzip6 \
      DRONE_WORKSPACE="$CORPUS" "$LARDER"
    # shellcheck disable=SC2046
    measure "larder-$backend-rebuild-existing" env $(larder_env "$backend") PLUGIN_REBUILD=true \
      PLUGIN_CACHE_KEY=zstd DRONE_WORKSPACE="$CORPUS" "$LARDER"
  done
done
wipe "$OUT/x"

python3 - "$RESULTS" "$SIZE_MB" "$FILES" "$RUNS" <<'PY'
import statistics, sys
path, size, files, runs = sys.argv[1:]
rows = {}
for line in open(path):
    name, secs, rss, cpu, server = line.split("\t")
    rows.setdefault(name, []).append((float(secs), int(rss), float(cpu), float(server)))
def med(k, i=0):
    return statistics.median(r[i] for r in rows[k]) if k in rows else None
def rss(k):
    return max(r[1] for r in rows[k]) / 1024
print(f"\ncorpus: {size} MB, {files} files; medians of {runs} runs; ratio = larder / baseline (below 1: larder is faster)")
print("larder runs at its default levels (zstd 3, gzip 1); rebuild-gzip6 is larder at gzip level 6")
print("CPU = user + system seconds of larder; server = CPU seconds the loopback S3 server used meanwhile\n")
print("| operation | baseline | s | larder fs s | ratio | RSS MiB | larder S3 s | S3 / fs | RSS MiB | CPU S3 / fs | server CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for op, base, label in [
    ("rebuild-zstd", "gnu-rebuild-zstd", "tar \\| zstd -3 -T2"),
    ("rebuild-gzip", "gnu-rebuild-gzip", "tar \\| pigz -6 -p2"),
    ("rebuild-gzip6", "gnu-rebuild-gzip", "tar \\| pigz -6 -p2"),
    ("restore-zstd", "gnu-restore-zstd", "zstd -dc \\| tar -x"),
    ("restore-gzip", "gnu-restore-gzip", "gzip -dc \\| tar -x"),
]:
    b, fs, s3 = med(base), med(f"larder-fs-{op}"), med(f"larder-s3-{op}")
    cells = [op, label, f"{b:.2f}" if b else "-"]
    cells += [f"{fs:.2f}", f"{fs / b:.2f}" if b else "-", f"{rss(f'larder-fs-{op}'):.0f}"] if fs else ["-"] * 3
    if s3:
        cpu = med(f"larder-s3-{op}", 2) / med(f"larder-fs-{op}", 2) if fs else None
        cells += [f"{s3:.2f}", f"{s3 / fs:.2f}" if fs else "-", f"{rss(f'larder-s3-{op}'):.0f}",
                  f"{cpu:.2f}" if cpu else "-", f"{med(f'larder-s3-{op}', 3):.2f}"]
    else:
        cells += ["-"] * 5
    print("| " + " | ".join(cells) + " |")
for backend in ("fs", "s3"):
    k = f"larder-{backend}-rebuild-existing"
    if k in rows:
        print(f"\nrebuild of an existing key ({backend}): {med(k):.3f} s")
PY

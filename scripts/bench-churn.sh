#!/usr/bin/env bash
# Storage under churn: what chunked entries keep in storage, against what
# their entries use, as dependencies are bumped round after round and flush
# keeps only the newest entries.
#
#   scripts/bench-churn.sh [--size-mb 600] [--files 15000] [--rounds 25] [--bump 2]
#                          [--keep 1.06]
#
# On the benchmark corpus (see bench.sh), on the filesystem backend: store
# it, then each round bump --bump % of the modules (a new version: the tree
# and cache/download files replaced by new ones of the same sizes), store
# it under a new key, and flush with max_size --keep times the first entry
# (about the last three entries), with the removal protocol's waits set to
# zero so unused packs go at the next flush. Reports, per round, the bytes
# uploaded, the chunk bytes the kept entries use (flush's count) and what
# the packs hold in storage. Packs are written whole and never rewritten,
# so storage can exceed what the entries use; flush retires packs the
# entries use less than half of (docs/how-it-works.md). LARDER_BIN runs
# another build of larder instead of this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SIZE_MB=600 FILES=15000 ROUNDS=25 BUMP=2 KEEP=1.06
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --bump) BUMP=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "usage: $0 [--size-mb N] [--files N] [--rounds N] [--bump PERCENT] [--keep FACTOR]" >&2; exit 2 ;;
  esac
done

WORK=${LARDER_BENCH_DIR:-$ROOT/target/bench}
CORPUS=$WORK/corpus-$SIZE_MB-$FILES
OUT=$WORK/churn
mkdir -p "$WORK"
if [ -z "${LARDER_BIN:-}" ]; then
  cargo build --release --locked --quiet
fi
LARDER=${LARDER_BIN:-$ROOT/target/release/larder}
if [ ! -d "$CORPUS/pkg.mod" ]; then
  echo "bench-churn: generating the corpus ($SIZE_MB MB, $FILES files)" >&2
  rm -rf "$CORPUS.tmp"
  python3 scripts/bench-corpus.py "$CORPUS.tmp" --size-mb "$SIZE_MB" --files "$FILES" >&2
  mv "$CORPUS.tmp" "$CORPUS"
fi

wipe() { [ -e "$1" ] && chmod -R u+w "$1" && rm -rf "$1"; mkdir -p "$1"; }
wipe "$OUT"
cp -a "$CORPUS/pkg.mod" "$OUT/pkg.mod"
RESULT=$OUT/result.json
ROWS=$OUT/rows.tsv
: >"$ROWS"

# larder FIELD [ENV...]: runs larder on the filesystem backend as a
# pipeline would, and prints the field FIELD of its result.
larder() {
  local field=$1; shift
  rm -f "$RESULT"
  env PLUGIN_BACKEND=filesystem PLUGIN_FILESYSTEM_CACHE_ROOT="$OUT/cache" PLUGIN_REMOTE_ROOT=churn \
    PLUGIN_MOUNT=pkg.mod PLUGIN_ENTRY_FORMAT=chunked PLUGIN_EXIT_CODE=true DRONE_WORKSPACE="$OUT" PLUGIN_RESULT_FILE="$RESULT" \
    "$@" "$LARDER" >/dev/null 2>"$OUT/stderr" || {
    echo "bench-churn: larder failed:" >&2; cat "$OUT/stderr" >&2; exit 1; }
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
if d.get(sys.argv[2]) is None:
    sys.exit("bench-churn: larder left no %s (%s: %s)" % (sys.argv[2], d.get("result"), d.get("reason")))
print(d[sys.argv[2]])' "$RESULT" "$field"
}
# packs: the bytes of the packs (not their catalogs) in storage.
packs() { find "$OUT/cache/churn/packs" -name '*.pack' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

first=$(larder uploaded_bytes PLUGIN_REBUILD=true PLUGIN_CACHE_KEY=r0)
max_size=$(awk "BEGIN { printf \"%.0f\", $first * $KEEP }")
held=$(packs)
echo -e "0\t$first\t$first\t$held" >>"$ROWS"
for round in $(seq 1 "$ROUNDS"); do
  echo "bench-churn: round $round of $ROUNDS" >&2
  python3 - "$OUT/pkg.mod" "$round" "$BUMP" <<'PY'
import importlib.util, os, random, shutil, sys
root, round_no, percent = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
spec = importlib.util.spec_from_file_location("corpus", "scripts/bench-corpus.py")
corpus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corpus)
rng = random.Random(round_no)
pool = corpus.line_pool(rng, 2000)
trees = sorted(
    os.path.join(org, name)
    for org in os.listdir(os.path.join(root, "github.com"))
    for name in os.listdir(os.path.join(root, "github.com", org))
)
for tree in rng.sample(trees, max(1, int(len(trees) * percent / 100))):
    org, module = tree.split("/")
    name, version = module.split("@")
    new = f"v9.{round_no}.0"
    old_tree = os.path.join(root, "github.com", tree)
    new_tree = os.path.join(root, "github.com", org, f"{name}@{new}")
    for dirpath, _, files in os.walk(old_tree):
        for f in files:
            path = os.path.join(dirpath, f)
            data = corpus.text(rng, pool, os.path.getsize(path))
            corpus.write(os.path.join(new_tree, os.path.relpath(path, old_tree)), data, 0o444)
    download = os.path.join(root, "cache/download/github.com", org, name, "@v")
    for f in os.listdir(download):
        if f.startswith(version + "."):
            path = os.path.join(download, f)
            data = rng.randbytes(os.path.getsize(path))
            corpus.write(os.path.join(download, new + f[len(version):]), data, 0o644)
            os.remove(path)
    for dirpath, _, _ in os.walk(old_tree):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(old_tree)
PY
  uploaded=$(larder uploaded_bytes PLUGIN_REBUILD=true PLUGIN_CACHE_KEY="r$round")
  flush=(PLUGIN_FLUSH=true PLUGIN_MAX_SIZE="$max_size" LARDER_GC_TIMING=0,0)
  larder stored_bytes "${flush[@]}" >/dev/null
  used=$(larder stored_bytes "${flush[@]}")
  held=$(packs)
  echo -e "$round\t$uploaded\t$used\t$held" >>"$ROWS"
done

python3 - "$ROWS" "$BUMP" "$KEEP" <<'PY'
import sys
rows = [list(map(int, line.split())) for line in open(sys.argv[1])]
MB = 1e6
print(f"\nchurn: {sys.argv[2]} % of the modules bumped per round; flush keeps max_size = "
      f"{sys.argv[3]}x the first entry\n")
print("| round | uploaded MB | entries use MB | packs hold MB | packs / use |")
print("|---|---|---|---|---|")
for r, up, used, held in rows:
    print(f"| {r} | {up / MB:.1f} | {used / MB:.1f} | {held / MB:.1f} | {held / used:.2f} |")
total = sum(up for _, up, _, _ in rows[1:])
print(f"\nuploaded in rounds 1-{rows[-1][0]}: {total / MB:.1f} MB; "
      f"at the end the packs hold {rows[-1][3] / rows[-1][2]:.2f}x what the entries use")
PY

#!/usr/bin/env bash
# Fuzzes larder for a bounded time (issue 9). Builds the targets in fuzz/
# with cargo-fuzz on the stable toolchain, without a sanitizer (`-s none`),
# installing cargo-fuzz first if it is missing; replays every saved crash
# input in fuzz/regressions/<target>/; then runs each target for
# FUZZ_SECONDS seconds from the seeds it writes itself plus whatever
# fuzz/corpus/<target> already holds (kept between local runs, ignored by
# git). Prints the executions per target. Exits non-zero on any panic, stack
# overflow, timeout or broken check; the failing input is then in
# fuzz/artifacts/<target>/ (minimise it with `cargo fuzz tmin -s none -a
# <target> <file>` and commit it to fuzz/regressions/<target>/).
#
# Usage: scripts/fuzz.sh [TARGET...]   (default: all targets)
# Environment:
#   FUZZ_SECONDS            time per target (default 30)
#   FUZZ_TARGET_DIR         where to build (default fuzz/target); a directory
#                           outside the clone keeps the build between CI runs
#   LARDER_FUZZ_SKIP_KNOWN  1 to skip inputs and checks that hit the issue-9
#                           defects already filed, to hunt for new ones
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-30}
cargo_fuzz_version=0.13.2
all_targets=(extract extract_entries key_template settings)
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=("${all_targets[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $cargo_fuzz_version"
    start=$SECONDS
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
    echo "fuzz: installed cargo-fuzz in $((SECONDS - start)) s"
fi

# The same flags for build and run, so that run reuses the build. No
# sanitizer, so stable Rust is enough; debug assertions catch overflows.
flags=(-s none --debug-assertions)
if [[ -n ${FUZZ_TARGET_DIR:-} ]]; then
    flags+=(--target-dir "$FUZZ_TARGET_DIR")
fi
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
start=$SECONDS
cargo fuzz build "${flags[@]}"
build_seconds=$((SECONDS - start))
echo "fuzz: built the targets in $build_seconds s"

options() {
    case $1 in
    extract | extract_entries) echo "-max_len=16384 -timeout=20" ;;
    *) echo "-max_len=4096 -timeout=10" ;;
    esac
}

# The panic message, libFuzzer's verdict and where the input went.
show_failure() {
    sed -n '/^Running: /p; /panicked at/,/^stack backtrace:/p' "$1" | grep -v '^stack backtrace:' | head -40 || true
    grep -h '^SUMMARY: ' "$1" | head -1 || true
    if ! grep -q 'panicked at\|^SUMMARY: ' "$1"; then
        tail -20 "$1" # killed without a report, e.g. by a stack overflow
    fi
    grep -h -A2 '^Failing input:\|^Reproduce with:' "$1" | grep -v '^--$' | sed '/^\s*$/d' | head -6 || true
}

logs=$(mktemp -d)
# The targets' sandboxes: on tmpfs when there is one, removed at the end
# (a target that crashes cannot remove its own).
if [[ -d /dev/shm && -w /dev/shm ]]; then
    LARDER_FUZZ_TMPDIR=$(mktemp -d -p /dev/shm larder-fuzz-run.XXXXXX)
else
    LARDER_FUZZ_TMPDIR=$(mktemp -d)
fi
export LARDER_FUZZ_TMPDIR
trap 'rm -rf "$logs" "$LARDER_FUZZ_TMPDIR"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
    # shellcheck disable=SC2207
    opts=($(options "$target"))
    shopt -s nullglob
    saved=("$root/fuzz/regressions/$target"/*)
    shopt -u nullglob
    # One at a time: libFuzzer stops at the first input that crashes.
    broken=0
    for input in "${saved[@]}"; do
        if ! cargo fuzz run "${flags[@]}" "$target" "$input" -- "${opts[@]}" \
            >"$logs/$target.replay" 2>&1; then
            echo "fuzz: $target: saved input ${input#"$root"/} fails:"
            show_failure "$logs/$target.replay"
            broken=$((broken + 1))
        fi
    done
    if ((${#saved[@]})); then
        echo "fuzz: $target: $((${#saved[@]} - broken)) of ${#saved[@]} saved inputs pass"
        if ((broken)); then
            failed+=("$target ($broken saved inputs)")
        fi
    fi
    corpus=$root/fuzz/corpus/$target
    mkdir -p "$corpus"
    start=$SECONDS
    if LARDER_FUZZ_SEED_DIR=$corpus cargo fuzz run "${flags[@]}" "$target" "$corpus" -- \
        "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 \
        >"$logs/$target.log" 2>&1; then
        status=ok
    else
        status=FAILED
        echo "fuzz: $target failed:"
        show_failure "$logs/$target.log"
        failed+=("$target")
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log")
    inputs=$(find "$corpus" -type f | wc -l)
    summary+=("$(printf '%-16s %-6s %10s executions in %3d s, corpus %d inputs' \
        "$target" "$status" "${runs:-?}" $((SECONDS - start)) "$inputs")")
done

echo "fuzz: summary (${seconds} s per target, build $build_seconds s):"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi

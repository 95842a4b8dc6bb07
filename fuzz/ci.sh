#!/usr/bin/env bash
# CI smoke fuzzing: build every target, replay the committed findings (fixtures/fuzz/), then fuzz
# each target for a fixed number of runs from a fixed seed on the seed corpus built from
# fixtures/ (make_seeds.py). Same binary + same corpus + same seed = the same inputs every run,
# so the job is not flaky: it fails only when a change makes one of those inputs crash, trip the
# allocation bound, or break a round trip. Builds with the default toolchain: without a sanitizer
# (`-s none`) cargo-fuzz passes only stable rustc flags, so stable works as well as nightly.
# Installs cargo-fuzz (pinned) if missing. Run from anywhere: fuzz/ci.sh
set -euo pipefail
cd "$(dirname "$0")"
source ./targets.sh

CARGO_FUZZ_VERSION=0.13.1
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

start=$(date +%s)
# release with overflow checks, no sanitizer (the targets check panics, allocation bounds and
# round trips; loratool's unsafe is limited to mmap), 16 codegen units for a faster build
# (own target directory, so a local run does not rebuild the long-run binaries in target/)
TIMEFORMAT="fuzz targets built: %R s (CPU %U + %S s)"
time cargo fuzz build -O -a -s none --codegen-units 16 --target-dir target/ci
FUZZ_BIN_DIR=target/ci/x86_64-unknown-linux-gnu/release

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the targets' scratch files go to /dev/shm (tmpfs) unless LORATOOL_FUZZ_TMP says otherwise:
# on a disk, the writers' fsyncs would dominate
python3 make_seeds.py --out "$work/corpus"

for t in "${FUZZ_TARGETS[@]}"; do
    bin=$FUZZ_BIN_DIR/$t
    findings=(../fixtures/fuzz/"$t"-*)
    if [ -e "${findings[0]}" ]; then
        "$bin" "${findings[@]}" >"$work/$t-replay.log" 2>&1 ||
            { cat "$work/$t-replay.log"; echo "FAIL: $t no longer handles a committed finding"; exit 1; }
    fi
    TIMEFORMAT="%R %U %S"
    if ! { time "$bin" "$work/corpus/$t" -dict="dict/${FUZZ_DICT[$t]}.dict" -seed=1 \
        -runs="${FUZZ_CI_RUNS[$t]}" -max_total_time=300 -timeout=20 -rss_limit_mb=2048 \
        -artifact_prefix="$work/$t-" -print_final_stats=1 >"$work/$t.log" 2>&1; } 2>"$work/$t.time"; then
        tail -60 "$work/$t.log"
        echo "FAIL: fuzz target $t crashed; the input is above (base64) — add it to fixtures/fuzz/"
        exit 1
    fi
    read -r wall user sys <"$work/$t.time"
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
    echo "$t: $runs runs, ${wall} s (CPU ${user} + ${sys} s), $(grep -o 'cov: [0-9]* ft: [0-9]*' "$work/$t.log" | tail -1)"
done
echo "fuzz smoke passed in $(($(date +%s) - start)) s"

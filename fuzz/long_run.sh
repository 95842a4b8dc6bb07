#!/usr/bin/env bash
# Fuzz one target until it has used CPU_SECONDS of CPU time in total (summed over runs in
# logs/<target>.cpu), at nice 19 (it yields to anything else running), growing corpus/<target>; libFuzzer's output and final stats
# are appended to logs/<target>.log. A crash stops the run (its input is in artifacts/<target>/);
# fix it, rebuild, and run again to continue the budget.
#
#     fuzz/long_run.sh TARGET CPU_SECONDS
set -uo pipefail
cd "$(dirname "$0")"
source ./targets.sh
target=$1
budget=$2
bin=$FUZZ_BIN_DIR/$target
[ -x "$bin" ] || { echo "build first: cargo fuzz build -O -a -s none" >&2; exit 2; }
mkdir -p logs "corpus/$target" "artifacts/$target"
used=$(cat "logs/$target.cpu" 2>/dev/null || echo 0)
if [ "$used" -ge "$budget" ]; then
    echo "$target: $used CPU-s already used (budget $budget)"
    exit 0
fi
echo "=== $(date -u +%FT%TZ) start, $used CPU-s used before" >>"logs/$target.log"
nice -n 19 "$bin" "corpus/$target" -dict="dict/${FUZZ_DICT[$target]}.dict" \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 -timeout=20 \
    -rss_limit_mb=3072 -max_total_time=86400 >>"logs/$target.log" 2>&1 &
pid=$!
tick=$(getconf CLK_TCK)
cpu=0
while kill -0 "$pid" 2>/dev/null; do
    if [ -r "/proc/$pid/stat" ]; then
        now=$(awk -v t="$tick" '{print int(($14 + $15) / t)}' "/proc/$pid/stat" 2>/dev/null || echo "$cpu")
        [ -n "$now" ] && cpu=$now
    fi
    if [ $((used + cpu)) -ge "$budget" ]; then
        kill -INT "$pid" 2>/dev/null
        break
    fi
    sleep 5
done
wait "$pid"
rc=$?
echo $((used + cpu)) >"logs/$target.cpu"
echo "=== $(date -u +%FT%TZ) exit $rc after $cpu CPU-s (total $((used + cpu)))" >>"logs/$target.log"
exit $rc

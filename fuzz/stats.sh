#!/usr/bin/env bash
# The recorded-run table of FUZZING.md from logs/ and corpus/: per target the CPU-seconds
# long_run.sh counted, executions (summed over runs), the last cov/ft libFuzzer printed, the
# corpus size, and crashes kept in artifacts/.
cd "$(dirname "$0")"
source ./targets.sh
echo "| Target | CPU-s | ≥ 30 CPU-min | Executions | cov | ft | Corpus (files / KiB) | Artifacts |"
echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
for t in "${FUZZ_TARGETS[@]}"; do
    cpu=$(cat "logs/$t.cpu" 2>/dev/null || echo 0)
    execs=$(grep -ho 'stat::number_of_executed_units: [0-9]*' "logs/$t.log" 2>/dev/null | awk '{s += $2} END {print s + 0}')
    last=$(grep -hoE 'cov: [0-9]+ ft: [0-9]+' "logs/$t.log" 2>/dev/null | tail -1)
    cov=$(echo "$last" | awk '{print $2}')
    ft=$(echo "$last" | awk '{print $4}')
    files=$(find "corpus/$t" -type f 2>/dev/null | wc -l)
    kib=$(du -sk "corpus/$t" 2>/dev/null | cut -f1)
    arts=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    ok=no; [ "$cpu" -ge 1800 ] && ok=yes
    echo "| \`$t\` | $cpu | $ok | $execs | ${cov:--} | ${ft:--} | $files / ${kib:-0} | $arts |"
done

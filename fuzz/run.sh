#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after the
# other, one process at a time. New inputs go to target/corpus/TARGET (kept
# between runs, not committed); the seeds in corpus/TARGET are read too.
# Crashes land in artifacts/TARGET/. dict/TARGET.dict, if present, is
# passed to libFuzzer as a dictionary. Exits non-zero if any target failed.
#
#     fuzz/run.sh 60                # a minute per target
#     fuzz/run.sh 600 swarm peer_wire
set -uo pipefail
cd "$(dirname "$0")"

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
fi
secs=$1
shift
./build.sh || exit 1
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p target/logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t"
    echo "=== $t: ${secs}s ($(date -u +%H:%M:%S))"
    rm -f fuzz-0.log
    log="target/logs/$t.log"
    dict=()
    if [ -f "dict/$t.dict" ]; then
        dict=(-dict="dict/$t.dict")
    fi
    cargo +nightly fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" "$t" "target/corpus/$t" "corpus/$t" -- "${dict[@]}" \
        -max_total_time="$secs" -jobs=1 -workers=1 -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"$log.out" 2>&1
    status=$?
    # With -jobs, libFuzzer writes the run's output to fuzz-0.log.
    if [ -f fuzz-0.log ]; then
        mv fuzz-0.log "$log"
    else
        cp "$log.out" "$log"
    fi
    grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log"
    if [ $status -ne 0 ]; then
        tail -n 40 "$log"
        echo "!!! $t failed (status $status); see fuzz/$log and fuzz/artifacts/$t/"
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all ${#targets[@]} targets ran ${secs}s without a finding"

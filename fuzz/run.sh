#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS of CPU time each, one
# after the other, one process at a time: the fuzzer's own user+sys time,
# read from /proc, so a busy machine does not shorten a run (wall time is
# capped at 4 x SECONDS). New inputs go to target/corpus/TARGET (kept
# between runs, not committed); the seeds in corpus/TARGET are read too.
# Crashes land in artifacts/TARGET/. dict/TARGET.dict, if present, is
# passed to libFuzzer as a dictionary. Each run's log is
# target/logs/TARGET.log and ends with a `cpu:` line. Exits non-zero if any
# target found something.
#
#     fuzz/run.sh 60                # a CPU-minute per target
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
bindir=target/x86_64-unknown-linux-gnu/release
clk=$(getconf CLK_TCK)
# libFuzzer's exit status when interrupted (SIGINT): our budget ran out.
interrupted=72

cpu_of() {
    awk -v c="$clk" '{ printf "%d", ($14 + $15) / c }' "/proc/$1/stat" 2>/dev/null
}

mkdir -p target/logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t"
    echo "=== $t: ${secs} CPU-s ($(date -u +%H:%M:%S))"
    log="target/logs/$t.log"
    dict=()
    if [ -f "dict/$t.dict" ]; then
        dict=(-dict="dict/$t.dict")
    fi
    start=$(date +%s)
    "$bindir/$t" -artifact_prefix="artifacts/$t/" "${dict[@]}" \
        -max_total_time=$((secs * 4)) -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 -interrupted_exit_code=$interrupted \
        "target/corpus/$t" "corpus/$t" >"$log" 2>&1 &
    pid=$!
    cpu=0
    stopped=0
    while kill -0 "$pid" 2>/dev/null; do
        c=$(cpu_of "$pid") && [ -n "$c" ] && cpu=$c
        if [ "$cpu" -ge "$secs" ] && [ $stopped -eq 0 ]; then
            kill -INT "$pid"
            stopped=1
        fi
        sleep 1
    done
    wait "$pid"
    status=$?
    wall=$(($(date +%s) - start))
    if [ $stopped -eq 1 ] && [ $status -eq $interrupted ]; then
        status=0
    fi
    echo "cpu: $t ${cpu} CPU-s, ${wall} s wall, status $status" >>"$log"
    grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^cpu:' "$log"
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
echo "all ${#targets[@]} targets ran ${secs} CPU-s without a finding"

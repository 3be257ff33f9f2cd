#!/usr/bin/env bash
# Hashing speed: making a torrent of a file already in the page cache, and
# checking existing data before seeding (recheck), for essaim and the other
# clients' tools; see bench/README.md.
#
#   bench/create.sh [SIZE] [--runs N] [--piece-size SIZE]
#
# SIZE defaults to 4GiB (the file must fit in RAM to stay in the page cache),
# --runs to 3, --piece-size to 1MiB (the same for every tool). Runs are
# interleaved (run 1 of every tool, then run 2, ...). The bound is
# nproc x the SHA-1 speed of one core (openssl speed -evp sha1 on 1 MiB
# blocks, one thread). Needs root (or sudo) the first time, to install
# Debian packages.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ARGS="$0 $*"
SIZE=4GiB
RUNS=3
PIECE=1MiB
while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift 2 ;;
    --piece-size) PIECE=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "create.sh: unknown option $1" >&2; usage ;;
    *) SIZE=$1; shift ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
BYTES=$(parse_size "$SIZE")
PB=$(parse_size "$PIECE")
((PB >= 16384 && (PB & (PB - 1)) == 0)) || die "--piece-size must be a power of two >= 16KiB"
LOG2=0
while ((1 << LOG2 < PB)); do LOG2=$((LOG2 + 1)); done
NPROC=$(nproc)
TIMEOUT=$((120 + BYTES / (16 << 20))) # each step: 120 s + 1 s per 16 MiB

bench_init create
ensure_packages /usr/bin/time:time openssl:openssl mktorrent:mktorrent \
    transmission-create:transmission-cli transmission-daemon:transmission-daemon \
    transmission-remote:transmission-cli libtorrent:python3-libtorrent aria2c:aria2
build_essaim

mem_kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
((BYTES / 1024 < mem_kib * 3 / 4)) ||
    say "warning: $(human_size "$BYTES") is more than 3/4 of the available memory; the file may not stay in the page cache"

HEADER=$(machine_info "$ARGS")
DIR=$WORK/src
DATA=$DIR/data.bin
say "writing $(human_size "$BYTES") of random data"
make_random_file "$DATA" "$BYTES"
warm_cache "$DATA"
ANNOUNCE=http://127.0.0.1:1/announce # mktorrent wants one; unused
RESULTS=$WORK/results.tsv
printf 'what\ttool\tthreads\trun\tstatus\twall\tcpu\trss_kib\n' >"$RESULTS"
say "SHA-1 speed of one core (openssl speed, 3 s)"
SHA1=$(sha1_single_core_mbps)
printf 'ceiling\tsha1\t%s\nceiling\tcores\t%s\n' "$SHA1" "$NPROC" >>"$RESULTS"

# The torrent every recheck uses (made once, not timed).
"$ESSAIM" create "$DATA" --piece-size "$PB" -t "$ANNOUNCE" -o "$WORK/check.torrent" >/dev/null

# The VM's memory is reclaimed behind the guest's back (kdamond), so part of
# the file can leave the page cache between two tools. Read it back before
# each one: every tool starts with all of it cached.
warm() { cat "$DATA" >/dev/null; }

record() { # WHAT TOOL THREADS RC: one line of results from T_WALL/T_USER/T_SYS/T_RSS
    local status=ok
    (($4 == 0)) || status="exit status $4 (logs: $WORK/logs/)"
    [[ $4 != 124 ]] || status="timed out after ${TIMEOUT}s"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$run" "$status" "$T_WALL" \
        "$(awk -v u="$T_USER" -v s="$T_SYS" 'BEGIN { printf "%.2f", u + s }')" "$T_RSS" >>"$RESULTS"
    say "run $run/$RUNS, $1 $2: $status, ${T_WALL}s"
}

# until_line NAME REGEX CMD...: time CMD until it prints REGEX (then stop it).
until_line() {
    local name=$1 re=$2 line rc=0
    shift 2
    line=$("$PY" "$BENCH_DIR/until_line.py" "$TIMEOUT" "$re" "$WORK/logs/$name" "$@") || rc=$?
    T_WALL=0 T_USER=0 T_SYS=0 T_RSS=0
    [[ -z $line ]] || read -r T_WALL T_USER T_RSS <<<"$line"
    return "$rc"
}

# Transmission verifies existing data when a torrent is added: time from
# `-a` until it is at 100% and no longer verifying (polled every 0.1 s).
tr_recheck() {
    local rc=0 c0 c1 t0 t1
    tr_start "tr-$run" "$DIR" 127.0.0.1 || return 1
    c0=$(cpu_ticks "$TR_PID")
    t0=$EPOCHREALTIME
    transmission-remote "127.0.0.1:$TR_RPC" -a "$WORK/check.torrent" >/dev/null || rc=1
    if ((rc == 0)); then
        local end=$((SECONDS + TIMEOUT))
        until tr_done "$TR_RPC"; do
            ((SECONDS < end)) || { rc=124; break; }
            sleep 0.1
        done
    fi
    t1=$EPOCHREALTIME
    c1=$(cpu_ticks "$TR_PID")
    T_RSS=$(peak_rss_kib "$TR_PID")
    T_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    T_USER=$(ticks_to_s $((c1 - c0)))
    T_SYS=0
    stop "$TR_PID"
    return "$rc"
}

ARIA2_CHECK=(--no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false
    --enable-peer-exchange=false --disable-ipv6=true --interface=127.0.0.1
    --file-allocation=none --summary-interval=0 --bt-save-metadata=false
    --auto-save-interval=0 --console-log-level=notice --stop-with-process=$$
    --check-integrity=true --bt-seed-unverified=false --seed-ratio=0.0)

for ((run = 1; run <= RUNS; run++)); do
    o=$WORK/out-$run
    mkdir -p "$o"
    warm; rc=0; run_timed "essaim-create-$run" "$TIMEOUT" "$ESSAIM" create "$DATA" --piece-size "$PB" -t "$ANNOUNCE" -o "$o/essaim.torrent" || rc=$?
    record create essaim "$NPROC (all cores)" "$rc"
    warm; rc=0; run_timed "mktorrent-$run" "$TIMEOUT" mktorrent -t "$NPROC" -l "$LOG2" -a "$ANNOUNCE" -o "$o/mktorrent.torrent" "$DATA" || rc=$?
    record create mktorrent "$NPROC (-t)" "$rc"
    warm; rc=0; run_timed "transmission-create-$run" "$TIMEOUT" transmission-create -s $((PB >> 10)) -t "$ANNOUNCE" -o "$o/transmission.torrent" "$DATA" || rc=$?
    record create transmission-create 1 "$rc"
    warm; rc=0; run_timed "lt-create-$run" "$TIMEOUT" "$PY" "$LT_PY" create "$DATA" "$o/lt.torrent" --tracker "$ANNOUNCE" --piece-size "$PB" || rc=$?
    record create "libtorrent (lt.py create)" "lib default" "$rc"
    warm; rc=0; until_line "essaim-check-$run" '^seeding' "$ESSAIM" seed "$WORK/check.torrent" --data "$DIR" --port 0 --listen-ip 127.0.0.1 -q || rc=$?
    record recheck "essaim (seed, until \`seeding\`)" "$NPROC (all cores)" "$rc"
    warm; rc=0; until_line "lt-check-$run" '^ready' "$PY" "$LT_PY" seed "$WORK/check.torrent" "$DIR" --port 0 --check-timeout "$TIMEOUT" || rc=$?
    record recheck "libtorrent (lt.py seed, until \`ready\`)" "hashing_threads=1" "$rc"
    warm; rc=0; until_line "aria2-check-$run" 'listening on TCP port' aria2c "${ARIA2_CHECK[@]}" --dir="$DIR" --listen-port="$(free_port)" "$WORK/check.torrent" || rc=$?
    record recheck "aria2 (--check-integrity, until listening)" 1 "$rc"
    warm; rc=0; tr_recheck || rc=$?
    record recheck "transmission-daemon (add, until 100%)" 1 "$rc"
    # Every tool must have made the same pieces.
    for t in "$o"/*.torrent; do
        "$PY" - "$t" "$o/essaim.torrent" <<'EOF' || say "warning: $(basename "$t") has other piece hashes than essaim's"
import sys, libtorrent as lt
a, b = (lt.torrent_info(p) for p in sys.argv[1:3])
sys.exit(0 if [a.hash_for_piece(i) for i in range(a.num_pieces())] == [b.hash_for_piece(i) for i in range(b.num_pieces())] else 1)
EOF
    done
    rm -rf "$o"
done

echo
echo "$HEADER"
echo "clients:  essaim $("$ESSAIM" --version | awk '{print $2}'), $(mktorrent -h 2>&1 | head -n 1 | awk '{print $1, $2}'), $(transmission-create -V 2>&1 | head -n 1), libtorrent $($PY -c 'import libtorrent; print(libtorrent.__version__)'), $(aria2c --version | head -n 1)"
rc=0
$PY "$BENCH_DIR/report.py" create "$RESULTS" "$BYTES" "$RUNS" || rc=$?
exit "$rc"

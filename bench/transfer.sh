#!/usr/bin/env bash
# One seeder, one leecher, one random file, on 127.0.0.1, for each client
# against itself; see bench/README.md.
#
#   bench/transfer.sh [SIZE] [--runs N] [--piece-size SIZE] [--clients LIST]
#                     [--timeout SECS] [--transmission-ip ADDR]
#
# SIZE defaults to 1GiB; --runs to 3; without --piece-size both 1MiB and
# 256KiB pieces are measured. LIST is a comma-separated subset of
# essaim,libtorrent,transmission,aria2,rqbit (default: all). --timeout bounds
# each transfer (default: 120 s + 1 s per 8 MiB). Transmission 3 never dials
# peers on 127.0.0.0/8, so two Transmission daemons cannot meet on loopback:
# they listen on --transmission-ip ADDR, a non-loopback address of this
# machine, or else on 198.18.0.1, added to lo for the run when root (the
# bytes never leave the machine either way).
# Needs root (or sudo) the first time, to install Debian packages.
# shellcheck disable=SC2317 # seed_X and get_X are called as "seed_$c"
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ARGS="$0 $*"
SIZE=1GiB
RUNS=3
PIECES=()
CLIENTS=essaim,libtorrent,transmission,aria2,rqbit
TIMEOUT=
TR_IP=
RQBIT_VERSION=${RQBIT_VERSION:-9.1.0} # the version issue 4 compares with

while (($#)); do
    case $1 in
    --runs) RUNS=${2:?}; shift 2 ;;
    --piece-size) PIECES+=("${2:?}"); shift 2 ;;
    --clients) CLIENTS=${2:?}; shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    --transmission-ip) TR_IP=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "transfer.sh: unknown option $1" >&2; usage ;;
    *) SIZE=$1; shift ;;
    esac
done
((${#PIECES[@]})) || PIECES=(1MiB 256KiB)
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number"
BYTES=$(parse_size "$SIZE")
((BYTES > 0)) || die "SIZE must be positive"
PIECE_BYTES=()
for p in "${PIECES[@]}"; do PIECE_BYTES+=("$(parse_size "$p")"); done
[[ -n $TIMEOUT ]] || TIMEOUT=$((120 + BYTES / (8 << 20)))
IFS=, read -r -a CLIENT_LIST <<<"$CLIENTS"
for c in "${CLIENT_LIST[@]}"; do
    case $c in essaim | libtorrent | transmission | aria2 | rqbit) ;; *) die "unknown client $c" ;; esac
done
has_client() { [[ ",$CLIENTS," == *",$1,"* ]]; }

bench_init transfer

# ---- setup -----------------------------------------------------------------
pkgs=(/usr/bin/time:time openssl:openssl)
has_client libtorrent && pkgs+=(libtorrent:python3-libtorrent)
has_client transmission && pkgs+=(transmission-daemon:transmission-daemon transmission-remote:transmission-cli)
has_client aria2 && pkgs+=(aria2c:aria2)
ensure_packages "${pkgs[@]}"
build_essaim

declare -A SKIP=()
if has_client rqbit; then
    RQBIT=$TOOLS/bin/rqbit
    if [[ -x $RQBIT ]] && "$RQBIT" --version 2>/dev/null | grep -q "$RQBIT_VERSION"; then
        :
    else
        say "cargo install rqbit --version $RQBIT_VERSION --locked --root $TOOLS (once; takes minutes)"
        if ! timeout 3600 cargo install rqbit --version "$RQBIT_VERSION" --locked --root "$TOOLS" \
            >"$WORK/logs/rqbit-install.log" 2>&1; then
            tail -n 5 "$WORK/logs/rqbit-install.log" >&2 || true
            mkdir -p "$TOOLS" && cp "$WORK/logs/rqbit-install.log" "$TOOLS/rqbit-install.log"
            SKIP[rqbit]="cargo install rqbit --version $RQBIT_VERSION --locked failed (log: bench/.tools/rqbit-install.log)"
        fi
    fi
fi
# Transmission 3 never dials peers on 127.0.0.0/8: without --transmission-ip,
# give the loopback device an address of the benchmarking range (RFC 2544,
# 198.18.0.0/15) for the run. Traffic to it stays in this machine.
BENCH_IP=198.18.0.1
if has_client transmission && [[ -z $TR_IP ]] && command -v ip >/dev/null; then
    if ip -o addr show dev lo | grep -q " $BENCH_IP/"; then
        TR_IP=$BENCH_IP
    elif as_root ip addr add "$BENCH_IP/32" dev lo 2>/dev/null; then
        TR_IP=$BENCH_IP
        AT_EXIT+=("as_root ip addr del $BENCH_IP/32 dev lo")
        say "added $BENCH_IP/32 to lo for Transmission (taken back at exit)"
    fi
fi
if has_client transmission && [[ -z $TR_IP ]]; then
    SKIP[transmission]="Transmission 3 never dials peers on 127.0.0.0/8 (it calls them martian), so two daemons on loopback never connect, and $BENCH_IP could not be added to lo (needs root and iproute2); run with --transmission-ip ADDR (a non-loopback address of this machine) to measure it"
fi

versions() {
    echo "clients:  essaim $("$ESSAIM" --version | awk '{print $2}')$(
        has_client libtorrent && echo ", libtorrent $($PY -c 'import libtorrent; print(libtorrent.__version__)')"
        has_client transmission && echo ", $(transmission-daemon --version 2>&1 | head -n 1)"
        has_client aria2 && echo ", $(aria2c --version | head -n 1)"
        has_client rqbit && [[ -z ${SKIP[rqbit]:-} ]] && echo ", $("$RQBIT" --version 2>&1 | head -n 1)"
    )" | tr -d '\n'
    echo
}

HEADER=$(machine_info "$ARGS")
SRC=$WORK/src
DATA=$SRC/data.bin
say "writing $(human_size "$BYTES") of random data"
make_random_file "$DATA" "$BYTES"
warm_cache "$DATA"
RESULTS=$WORK/results.tsv
printf 'piece\tclient\trun\tstatus\twall\tlcpu\tscpu\trss_kib\n' >"$RESULTS"
for c in "${!SKIP[@]}"; do printf 'skip\t%s\t%s\n' "$c" "${SKIP[$c]}" >>"$RESULTS"; done
if has_client transmission && [[ -n $TR_IP ]]; then
    printf 'note\ttransmission: both daemons listen on %s, not 127.0.0.1 (Transmission 3 does not dial loopback peers); the bytes still stay in this machine\n' "$TR_IP" >>"$RESULTS"
fi

# Trackers: aria2 learns peers only from a tracker; the others are told the
# seeder's address (--peer), so their torrents carry no tracker.
TRACKER_PORT=$(free_port)
spawn tracker "$ESSAIM" tracker --listen "127.0.0.1:$TRACKER_PORT"
wait_line 20 "$WORK/logs/tracker.out" '^tracker listening' "essaim tracker" "$SPAWNED"
TRACKER=http://127.0.0.1:$TRACKER_PORT/announce
if has_client transmission && [[ -n $TR_IP ]]; then
    TR_TRACKER_PORT=$(free_port)
    spawn tracker-tr "$ESSAIM" tracker --listen "$TR_IP:$TR_TRACKER_PORT"
    wait_line 20 "$WORK/logs/tracker-tr.out" '^tracker listening' "essaim tracker on $TR_IP" "$SPAWNED"
fi

# Torrents, made by essaim (the first one timed: that is the hashing ceiling).
for i in "${!PIECE_BYTES[@]}"; do
    pb=${PIECE_BYTES[$i]}
    if ((i == 0)); then
        run_timed create-ceiling 600 "$ESSAIM" create "$DATA" --piece-size "$pb" -o "$WORK/plain-$pb.torrent" ||
            die "essaim create failed"
        printf 'ceiling\tcreate\t%.0f\n' "$(awk -v b="$BYTES" -v t="$T_WALL" 'BEGIN { print (t > 0 ? b / t / 1e6 : 0) }')" >>"$RESULTS"
    else
        "$ESSAIM" create "$DATA" --piece-size "$pb" -o "$WORK/plain-$pb.torrent" >/dev/null
    fi
    if has_client aria2; then
        "$ESSAIM" create "$DATA" --piece-size "$pb" -t "$TRACKER" -o "$WORK/tracker-$pb.torrent" >/dev/null
    fi
    if [[ -n $TR_IP ]] && has_client transmission; then
        "$ESSAIM" create "$DATA" --piece-size "$pb" -t "http://$TR_IP:$TR_TRACKER_PORT/announce" \
            -o "$WORK/tr-$pb.torrent" >/dev/null
    fi
done

# Ceilings: SHA-1 on one core, one TCP stream on loopback, sequential write.
say "measuring the machine's ceilings"
printf 'ceiling\tsha1\t%s\n' "$(sha1_single_core_mbps)" >>"$RESULTS"
printf 'ceiling\ttcp\t%s\n' "$($PY "$BENCH_DIR/ceilings.py" tcp "$BYTES" | awk '{print $2}')" >>"$RESULTS"
dd_out=$(dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=$(((BYTES + (1 << 20) - 1) >> 20)) conv=fdatasync 2>&1) ||
    die "dd failed: $dd_out"
rm -f "$WORK/dd.bin"
dd_secs=$(awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) print $(i - 1) }' <<<"$dd_out" | tail -n 1)
printf 'ceiling\twrite\t%.0f\n' "$(awk -v b="$(((BYTES + (1 << 20) - 1) >> 20 << 20))" -v t="${dd_secs:-0}" 'BEGIN { print (t > 0 ? b / t / 1e6 : 0) }')" >>"$RESULTS"

# ---- clients ---------------------------------------------------------------
# Each seed_X TORRENT_KIND PIECE starts a seeder of $DATA and waits until it
# has checked the data; sets SEED_PID and SEED_PORT. Each get_X runs the
# leecher into $OUT and sets T_WALL T_USER T_SYS T_RSS like run_timed.

ARIA2_COMMON=(--no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false
    --enable-peer-exchange=false --disable-ipv6=true --interface=127.0.0.1
    --bt-tracker-interval=5 --file-allocation=none --summary-interval=0
    --bt-save-metadata=false --auto-save-interval=0 --console-log-level=notice
    --bt-min-crypto-level=plain --bt-require-crypto=false
    --max-overall-upload-limit=0 --max-overall-download-limit=0)

seed_essaim() {
    SEED_PORT=$(free_port)
    spawn "$TAG-seed" "$ESSAIM" seed "$WORK/plain-$1.torrent" --data "$SRC" --port "$SEED_PORT" --listen-ip 127.0.0.1 -q
    SEED_PID=$SPAWNED
    wait_line 600 "$WORK/logs/$TAG-seed.out" '^seeding' "essaim seed" "$SEED_PID"
}
get_essaim() {
    run_timed "$TAG-get" "$TIMEOUT" "$ESSAIM" get "$WORK/plain-$1.torrent" -o "$OUT" --no-seed \
        --peer "127.0.0.1:$SEED_PORT" --port "$(free_port)" --listen-ip 127.0.0.1 -q
}

seed_libtorrent() {
    SEED_PORT=$(free_port)
    spawn "$TAG-seed" "$PY" "$LT_PY" seed "$WORK/plain-$1.torrent" "$SRC" --port "$SEED_PORT" --check-timeout 600
    SEED_PID=$SPAWNED
    wait_line 600 "$WORK/logs/$TAG-seed.out" '^ready' "lt.py seed" "$SEED_PID"
}
get_libtorrent() {
    run_timed "$TAG-get" "$TIMEOUT" "$PY" "$LT_PY" get "$WORK/plain-$1.torrent" "$OUT" \
        --port "$(free_port)" --peer "127.0.0.1:$SEED_PORT" --timeout "$TIMEOUT"
}

seed_aria2() {
    SEED_PORT=$(free_port)
    spawn "$TAG-seed" aria2c "${ARIA2_COMMON[@]}" --stop-with-process=$$ --dir="$SRC" \
        --listen-port="$SEED_PORT" --check-integrity=true --bt-seed-unverified=false \
        --seed-ratio=0.0 "$WORK/tracker-$1.torrent"
    SEED_PID=$SPAWNED
    wait_line 600 "$WORK/logs/$TAG-seed.out" 'listening on TCP port' "aria2 seed" "$SEED_PID"
}
get_aria2() {
    run_timed "$TAG-get" "$TIMEOUT" aria2c "${ARIA2_COMMON[@]}" --stop-with-process=$$ --dir="$OUT" \
        --listen-port="$(free_port)" --seed-time=0 --bt-stop-timeout="$TIMEOUT" "$WORK/tracker-$1.torrent"
}

# rqbit: `rqbit download`; the leecher with --exit-on-finish, the seeder
# without (it checks the existing data, then stays). TCP on 127.0.0.1 only;
# DHT, LSD, UPnP and the HTTP API off; the seeder given with --initial-peers.
RQBIT_COMMON=(--disable-dht --disable-dht-persistence --disable-lsd --disable-upnp-port-forward
    --listen-ip 127.0.0.1 --ipv4-only)
seed_rqbit() {
    SEED_PORT=$(free_port)
    spawn "$TAG-seed" "$RQBIT" -v info "${RQBIT_COMMON[@]}" --listen-port "$SEED_PORT" \
        download -o "$SRC" --overwrite --disable-http-api "$WORK/plain-$1.torrent"
    SEED_PID=$SPAWNED
    # Once live, its stats line (every second) says 100.00%.
    wait_line 600 "$WORK/logs/$TAG-seed.out" '\]: 100\.00%' "rqbit seed" "$SEED_PID"
}
get_rqbit() {
    run_timed "$TAG-get" "$TIMEOUT" "$RQBIT" -v warn "${RQBIT_COMMON[@]}" --listen-port "$(free_port)" \
        download -o "$OUT" --exit-on-finish --disable-http-api \
        --initial-peers "127.0.0.1:$SEED_PORT" "$WORK/plain-$1.torrent"
}

# Transmission (only with --transmission-ip): two daemons on $TR_IP, RPC on
# 127.0.0.1; the leecher learns the seeder from a tracker on $TR_IP.
seed_transmission() {
    tr_start "$TAG-seed" "$SRC" "$TR_IP" || return 1
    SEED_PID=$TR_PID
    SEED_RPC=$TR_RPC
    transmission-remote "127.0.0.1:$SEED_RPC" -a "$WORK/tr-$1.torrent" >/dev/null
    wait_until 600 "Transmission to verify the data" tr_done "$SEED_RPC"
}
get_transmission() {
    tr_start "$TAG-get" "$OUT" "$TR_IP" || return 1
    local pid=$TR_PID rpc=$TR_RPC t0 t1 c0 c1 rc=0
    c0=$(cpu_ticks "$pid")
    t0=$EPOCHREALTIME
    transmission-remote "127.0.0.1:$rpc" -a "$WORK/tr-$1.torrent" >/dev/null
    wait_until "$TIMEOUT" "Transmission to download" tr_done "$rpc" || rc=124
    t1=$EPOCHREALTIME
    c1=$(cpu_ticks "$pid")
    T_RSS=$(peak_rss_kib "$pid")
    T_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    T_USER=$(ticks_to_s $((c1 - c0)))
    T_SYS=0
    # Quit (flushes its cache) before the bytes are compared.
    transmission-remote "127.0.0.1:$rpc" --exit >/dev/null 2>&1 || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    stop "$pid"
    return "$rc"
}

# ---- runs --------------------------------------------------------------------
# Interleaved: run 1 of every client and piece size, then run 2, ...
for ((run = 1; run <= RUNS; run++)); do
    for pb in "${PIECE_BYTES[@]}"; do
        for c in "${CLIENT_LIST[@]}"; do
            [[ -z ${SKIP[$c]:-} ]] || continue
            TAG=$c-$pb-$run
            OUT=$WORK/out/$TAG
            mkdir -p "$OUT"
            status=ok
            SEED_PID=
            if ! "seed_$c" "$pb"; then
                status="seeder did not start (logs: $WORK/logs/$TAG-seed.*)"
                printf '%s\t%s\t%s\t%s\t\t\t\t\n' "$pb" "$c" "$run" "$status" >>"$RESULTS"
                say "run $run, $c, $(human_size "$pb") pieces: $status"
                [[ -n ${SEED_PID:-} ]] && stop "$SEED_PID"
                continue
            fi
            s0=$(cpu_ticks "$SEED_PID")
            rc=0
            "get_$c" "$pb" || rc=$?
            s1=$(cpu_ticks "$SEED_PID")
            stop "$SEED_PID"
            if ((rc == 124)); then
                status="timed out after ${TIMEOUT}s (logs: $WORK/logs/$TAG-get.*)"
            elif ((rc != 0)); then
                status="leecher exited with status $rc (logs: $WORK/logs/$TAG-get.*)"
            elif ! cmp -s "$DATA" "$OUT/data.bin"; then
                status="downloaded file differs from the source"
            fi
            lcpu=$(awk -v u="$T_USER" -v s="$T_SYS" 'BEGIN { printf "%.2f", u + s }')
            scpu=$(ticks_to_s $((s1 - s0)))
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pb" "$c" "$run" "$status" "$T_WALL" "$lcpu" "$scpu" "$T_RSS" >>"$RESULTS"
            say "run $run/$RUNS, $c, $(human_size "$pb") pieces: $status, ${T_WALL}s, leecher CPU ${lcpu}s, seeder CPU ${scpu}s, leecher RSS $((T_RSS / 1024)) MiB"
            # Drop the copy before the next run; its dirty pages go with it.
            rm -rf "$OUT"
            sync
        done
    done
done

# ---- table -----------------------------------------------------------------
echo
echo "$HEADER"
versions
rc=0
$PY "$BENCH_DIR/report.py" transfer "$RESULTS" "$BYTES" "$RUNS" || rc=$?
exit "$rc"

#!/usr/bin/env bash
# Client-to-client transfers on 127.0.0.1, without essaim: checks that the
# interop harness drives Transmission, libtorrent (lt.py) and aria2 correctly.
#
#   tests/interop/validate.sh [PAIR...]
#
# PAIR is SEEDER-LEECHER with SEEDER and LEECHER among tr, lt, aria2 (default:
# all six ordered pairs). Each pair gets fresh random data (a multi-file
# torrent with a zero-length file and an odd-sized last piece), a fresh
# tracker (tracker.py) and fresh client state, and compares the downloaded
# files byte for byte with the source. Every wait has a deadline. The work
# folder (logs of every client) is kept on failure, or always with KEEP=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
DEADLINE=${DEADLINE:-90}
WORK=$(mktemp -d /tmp/essaim-interop.XXXXXX)
PIDS=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ ${KEEP:-} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log() { echo "validate: $*" >&2; }
die() { log "FAIL: $*"; KEEP=1; exit 1; }

# A free port below the kernel's ephemeral range, so that no outgoing
# connection (a tracker announce) takes it before the client binds it.
free_port() {
    $PY - <<'EOF'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    port = random.randrange(10000, low)
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass
EOF
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
wait_until() {
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

make_data() { # DIR: DIR/multi/{a.bin,empty.txt,sub/b.bin,z.bin}
    mkdir -p "$1/multi/sub"
    head -c $((1048576 + 12345)) /dev/urandom >"$1/multi/a.bin"
    head -c 700000 /dev/urandom >"$1/multi/sub/b.bin"
    : >"$1/multi/empty.txt"
    head -c 5 /dev/urandom >"$1/multi/z.bin"
}

start_tracker() { # sets TRACKER
    local out=$WORK/$PAIR/tracker.out
    $PY "$HERE/tracker.py" --listen 127.0.0.1:0 >"$out" 2>"$WORK/$PAIR/tracker.err" &
    PIDS+=($!)
    wait_until 10 "tracker to listen" grep -q '^listening on' "$out"
    TRACKER="http://$(sed -n 's/^listening on //p' "$out")/announce"
}

# ---- libtorrent -----------------------------------------------------------
lt_seed() { # TORRENT DATA_DIR PORT [--peer X]...
    local t=$1 d=$2 port=$3; shift 3
    $PY "$HERE/lt.py" seed "$t" "$d" --port "$port" "$@" >"$WORK/$PAIR/lt-seed.out" 2>"$WORK/$PAIR/lt-seed.err" &
    PIDS+=($!)
    wait_until 30 "lt.py seed ready" grep -q '^ready' "$WORK/$PAIR/lt-seed.out"
}
lt_get() { # TORRENT OUT_DIR PORT [--peer X]...
    local t=$1 d=$2 port=$3; shift 3
    timeout $((DEADLINE + 10)) $PY "$HERE/lt.py" get "$t" "$d" --port "$port" --timeout "$DEADLINE" "$@" \
        2>"$WORK/$PAIR/lt-get.err" || die "lt.py get failed (see $WORK/$PAIR/lt-get.err)"
}

# ---- Transmission 3 -------------------------------------------------------
tr_start() { # CONFIG_DIR DOWNLOAD_DIR; sets TR_RPC TR_PEER TR_PID
    local c=$1 d=$2
    TR_RPC=$(free_port)
    TR_PEER=$(free_port)
    mkdir -p "$c" "$d"
    cat >"$c/settings.json" <<EOF
{
  "bind-address-ipv4": "127.0.0.1",
  "bind-address-ipv6": "::1",
  "dht-enabled": false,
  "lpd-enabled": false,
  "pex-enabled": false,
  "utp-enabled": false,
  "port-forwarding-enabled": false,
  "peer-port": $TR_PEER,
  "peer-port-random-on-start": false,
  "rpc-enabled": true,
  "rpc-bind-address": "127.0.0.1",
  "rpc-port": $TR_RPC,
  "rpc-authentication-required": false,
  "rpc-whitelist-enabled": true,
  "rpc-whitelist": "127.0.0.1",
  "rpc-host-whitelist-enabled": false,
  "download-dir": "$d",
  "incomplete-dir-enabled": false,
  "encryption": 0,
  "speed-limit-down-enabled": false,
  "speed-limit-up-enabled": false,
  "alt-speed-enabled": false,
  "download-queue-enabled": false,
  "seed-queue-enabled": false,
  "queue-stalled-enabled": false,
  "ratio-limit-enabled": false,
  "idle-seeding-limit-enabled": false,
  "blocklist-enabled": false,
  "start-added-torrents": true,
  "message-level": 2
}
EOF
    transmission-daemon -f -g "$c" -e "$c/log.txt" &
    TR_PID=$!
    PIDS+=($TR_PID)
    wait_until 20 "transmission rpc" transmission-remote "127.0.0.1:$TR_RPC" -l
}
tr_info() { transmission-remote "127.0.0.1:$TR_RPC" -t 1 -i; }
tr_done() { # 100% and no longer verifying
    local info; info=$(tr_info) || return 1
    grep -q 'Percent Done: 100%' <<<"$info" && ! grep -q 'State: .*Verif' <<<"$info"
}
tr_seed() { # TORRENT DATA_DIR
    tr_start "$WORK/$PAIR/tr-config" "$2"
    transmission-remote "127.0.0.1:$TR_RPC" -a "$1" >/dev/null
    # Transmission verifies existing data when a torrent is added.
    wait_until 30 "transmission to verify the data" tr_done
}
tr_get() { # TORRENT OUT_DIR  (tr_start must have run)
    transmission-remote "127.0.0.1:$TR_RPC" -a "$1" >/dev/null
    wait_until "$DEADLINE" "transmission to finish downloading" tr_done
    # Quit the daemon so that every byte is flushed before comparing.
    transmission-remote "127.0.0.1:$TR_RPC" --exit >/dev/null
    wait_until 20 "transmission-daemon to exit" tr_exited
}
tr_exited() { # gone, or a zombie waiting to be reaped
    local s
    s=$(ps -o stat= -p "$TR_PID") || return 0
    [[ $s == Z* ]]
}

# ---- aria2 ----------------------------------------------------------------
ARIA2_COMMON=(--no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false
    --enable-peer-exchange=false --disable-ipv6=true --interface=127.0.0.1
    --bt-tracker-interval=5 --file-allocation=none --summary-interval=0
    --bt-save-metadata=false --auto-save-interval=0 --console-log-level=notice
    --bt-min-crypto-level=plain --bt-require-crypto=false
    --max-overall-upload-limit=0 --max-overall-download-limit=0)
aria2_seed() { # TORRENT DATA_DIR PORT
    aria2c "${ARIA2_COMMON[@]}" --stop-with-process=$$ --dir="$2" --listen-port="$3" \
        --check-integrity=true --bt-seed-unverified=false --seed-ratio=0.0 "$1" \
        >"$WORK/$PAIR/aria2-seed.out" 2>&1 &
    PIDS+=($!)
    wait_until 30 "aria2 to listen" grep -q 'listening on TCP port' "$WORK/$PAIR/aria2-seed.out"
}
aria2_get() { # TORRENT OUT_DIR PORT
    timeout $((DEADLINE + 10)) aria2c "${ARIA2_COMMON[@]}" --stop-with-process=$$ --dir="$2" \
        --listen-port="$3" --seed-time=0 --bt-stop-timeout="$DEADLINE" "$1" \
        >"$WORK/$PAIR/aria2-get.out" 2>&1 || die "aria2c failed (see $WORK/$PAIR/aria2-get.out)"
}

compare() { # TORRENT SRC_DIR OUT_DIR: every file the torrent lists
    local size path n=0
    while read -r size path; do
        if [[ $size == 0 && ! -e $3/$path && ${ZERO_MAY_BE_MISSING:-} == 1 ]]; then
            log "note: zero-length $path not created (Transmission 3 does not create them)"
            continue
        fi
        cmp "$2/$path" "$3/$path" || die "$path differs from the source"
        n=$((n + 1))
    done < <($PY "$HERE/lt.py" files "$1")
    ((n > 0)) || die "no files listed in $1"
}

run_pair() {
    PAIR=$1
    local seeder=${PAIR%-*} leecher=${PAIR#*-}
    local w=$WORK/$PAIR
    mkdir -p "$w"
    make_data "$w/src"
    start_tracker
    # transmission-create leaves zero-length files out; lt.py create keeps them.
    if [[ $seeder == tr ]]; then
        transmission-create -t "$TRACKER" -s 64 -o "$w/t.torrent" "$w/src/multi" >/dev/null
    else
        $PY "$HERE/lt.py" create "$w/src/multi" "$w/t.torrent" --tracker "$TRACKER" --piece-size 65536
    fi
    local out=$w/out sport lport
    sport=$(free_port)
    lport=$(free_port)
    SECONDS_START=$SECONDS
    case $leecher in tr) tr_start "$w/tr-config" "$out" ;; esac
    case $seeder in
    lt)
        # Transmission does not dial 127.0.0.0/8 peers from trackers: dial it.
        if [[ $leecher == tr ]]; then
            lt_seed "$w/t.torrent" "$w/src" "$sport" --peer "127.0.0.1:$TR_PEER"
        else lt_seed "$w/t.torrent" "$w/src" "$sport"; fi
        ;;
    tr) tr_seed "$w/t.torrent" "$w/src"; sport=$TR_PEER ;;
    aria2) aria2_seed "$w/t.torrent" "$w/src" "$sport" ;;
    esac
    case $leecher in
    lt) lt_get "$w/t.torrent" "$out" "$lport" --peer "127.0.0.1:$sport" ;;
    tr) tr_get "$w/t.torrent" "$out" ;;
    aria2) aria2_get "$w/t.torrent" "$out" "$lport" ;;
    esac
    ZERO_MAY_BE_MISSING=0
    [[ $leecher == tr ]] && ZERO_MAY_BE_MISSING=1
    compare "$w/t.torrent" "$w/src" "$out"
    log "ok: $seeder seeds, $leecher downloads ($((SECONDS - SECONDS_START)) s)"
    # Stop this pair's processes before the next one.
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

log "transmission: $(transmission-daemon --version 2>&1 | head -1)"
log "aria2: $(aria2c --version | head -1)"
log "libtorrent: $($PY -c 'import libtorrent; print(libtorrent.__version__)')"

pairs=("$@")
((${#pairs[@]})) || pairs=(tr-lt lt-tr aria2-lt lt-aria2 tr-aria2 aria2-tr)
for p in "${pairs[@]}"; do run_pair "$p"; done
log "all ${#pairs[@]} pairs passed"

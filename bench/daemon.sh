#!/usr/bin/env bash
# bench/daemon.sh [N] [--runs R] [--clients LIST] [--idle SECS] [--size BYTES]
#
# A node people leave running, at scale: N small torrents (default 10,000,
# one 16 KiB piece each, data present, a local essaim tracker on 127.0.0.1
# with a 30-minute interval) loaded into one essaim daemon and, in the same
# run, into transmission-daemon and qbittorrent-nox (Debian's packages),
# each through its own HTTP API. For each client:
#   - load: adding all N and the first check (reported, not compared);
#   - stop: seconds from SIGTERM until the process has exited (saving its
#     state), each of the R stops (a '!' when it had to be killed after
#     60 s);
#   - restart: stopped (SIGTERM) and started again R times (default 2):
#     seconds from the start of the process until all N seed (no full
#     recheck: each client has its resume data);
#   - idle: after the last restart and a 10 s settle, RSS (VmRSS) and CPU
#     (user and system) over SECS seconds (default 60);
#   - list: one API call listing every torrent with the fields a UI shows
#     (median of 5).
# Every client: DHT, LSD, PEX, UPnP, uTP off; no queue, no limits; peers on
# 127.0.0.1. LIST: essaim,transmission,qbittorrent (default all).
# shellcheck disable=SC2034
set -euo pipefail
. "$(dirname "$0")/lib.sh"

N=10000
RUNS=2
IDLE=60
SIZE=16384
CLIENTS=essaim,transmission,qbittorrent
ARGS=("$@")
while (($#)); do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    -h | --help) usage ;;
    [0-9]*) N=$1; shift ;;
    *) usage ;;
    esac
done

bench_init daemon
IFS=, read -r -a LIST_CLIENTS <<<"$CLIENTS"
NEED=(/usr/bin/time:time)
for c in "${LIST_CLIENTS[@]}"; do
    case $c in
    essaim) ;;
    transmission) NEED+=(transmission-daemon:transmission-daemon) ;;
    qbittorrent) NEED+=(qbittorrent-nox:qbittorrent-nox) ;;
    *) die "unknown client $c (essaim, transmission, qbittorrent)" ;;
    esac
done
ensure_packages "${NEED[@]}"
build_essaim
DRV=$BENCH_DIR/daemon.py

# cpu_split PID: "USER_TICKS SYS_TICKS" so far.
cpu_split() {
    local line
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || {
        echo "0 0"
        return
    }
    # shellcheck disable=SC2086
    set -- ${line##*) }
    echo "${12} ${13}"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

TPORT=$(free_port)
spawn tracker "$ESSAIM" tracker --listen "127.0.0.1:$TPORT" --interval 30m
wait_line 30 "$WORK/logs/tracker.out" '^announce URL' tracker "$SPAWNED"
say "making $N torrents of $SIZE bytes"
DATA=$WORK/data
$PY "$DRV" make "$N" "$DATA" "$WORK/torrents" "http://127.0.0.1:$TPORT/announce" --size "$SIZE"

# start_CLIENT: (re)starts the client; sets PID and URL.
start_essaim() {
    local dir=$WORK/c-essaim
    mkdir -p "$dir"
    if [[ ! -f $dir/config.toml ]]; then
        E_API=$(free_port)
        E_PEER=$(free_port)
        cat >"$dir/config.toml" <<EOF
dht = false
lsd = false
listen_ip = "127.0.0.1"
port = $E_PEER
max_active_downloads = "unlimited"
max_active_seeds = "unlimited"
[api]
listen = "127.0.0.1:$E_API"
EOF
    fi
    spawn essaim "$ESSAIM" daemon --config "$dir/config.toml" --state-dir "$dir/state" \
        --download-dir "$DATA"
    PID=$SPAWNED
    URL=http://127.0.0.1:$E_API
}
start_transmission() {
    local conf=$WORK/c-transmission
    mkdir -p "$conf"
    if [[ ! -f $conf/settings.json ]]; then
        T_RPC=$(free_port)
        local peer
        peer=$(free_port)
        tr_settings "$conf/settings.json" "$DATA" 127.0.0.1 "$T_RPC" "$peer" \
            '"peer-limit-global": 500, "peer-limit-per-torrent": 50,'
    fi
    spawn transmission transmission-daemon -f -g "$conf"
    PID=$SPAWNED
    URL=http://127.0.0.1:$T_RPC
}
start_qbittorrent() {
    local prof=$WORK/c-qbittorrent
    local conf=$prof/qBittorrent/config/qBittorrent.conf
    if [[ ! -f $conf ]]; then
        Q_WEB=$(free_port)
        Q_PEER=$(free_port)
        mkdir -p "$(dirname "$conf")"
        cat >"$conf" <<EOF
[LegalNotice]
Accepted=true

[Preferences]
WebUI\\Enabled=true
WebUI\\Address=127.0.0.1
WebUI\\Port=$Q_WEB
WebUI\\LocalHostAuth=false
WebUI\\HostHeaderValidation=false
WebUI\\CSRFProtection=false
EOF
        QB_NEW=1
    fi
    spawn qbittorrent qbittorrent-nox "--profile=$prof" "--webui-port=$Q_WEB"
    PID=$SPAWNED
    URL=http://127.0.0.1:$Q_WEB
    if [[ ${QB_NEW:-0} == 1 ]]; then
        wait_until 60 "qbittorrent WebUI" curl -sf "$URL/api/v2/app/version"
        $PY "$DRV" prefs qbittorrent "$URL" "$DATA" "$Q_PEER"
        QB_NEW=0
    fi
}

# stop_timed PID: SIGTERM, then up to 60 s for the exit (SIGKILL after);
# sets STOP_T to the seconds it took, with a '!' when it had to be killed.
# Not in a subshell: only this shell can reap its child (a zombie still
# answers kill -0; `alive` reads its state).
stop_timed() {
    local pid=$1 i t0 mark=
    t0=$(date +%s.%N)
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 1200; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    alive "$pid" && mark='!'
    stop "$pid"
    STOP_T=$(awk -v a="$t0" -v b="$(date +%s.%N)" -v m="$mark" 'BEGIN { printf "%.2f%s", b - a, m }')
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A LOAD RESTART RESTARTS STOP STOPS RSS CPU_U CPU_S LIST VERSION LOST
for c in "${LIST_CLIENTS[@]}"; do
    case $c in
    essaim) VERSION[$c]=$("$ESSAIM" --version) ;;
    transmission) VERSION[$c]=$(transmission-daemon --version 2>&1 | head -n1) ;;
    qbittorrent) VERSION[$c]=$(qbittorrent-nox --version 2>/dev/null | head -n1) ;;
    *) die "unknown client $c" ;;
    esac
    say "$c: starting, adding $N torrents"
    SECONDS_START=$SECONDS
    "start_$c"
    sleep 1
    $PY "$DRV" add "$c" "$URL" "$WORK/torrents" "$DATA" || die "$c: adding failed"
    $PY "$DRV" wait "$c" "$URL" "$N" 3600 >/dev/null || die "$c: not all seeding"
    LOAD[$c]=$((SECONDS - SECONDS_START))
    sleep 10 # settle: every client writes its state after the adds
    times=()
    stops=()
    for ((r = 1; r <= RUNS; r++)); do
        stop_timed "$PID"
        say "$c: stop $r: exited after $STOP_T s"
        stops+=("$STOP_T")
        # From the start of the process until all seed.
        t0=$(date +%s.%N)
        "start_$c"
        # A client that did not bring every torrent back is reported as
        # such (no restart figure), and measured for the rest.
        if $PY "$DRV" wait "$c" "$URL" "$N" 120 >/dev/null 2>"$WORK/wait.err"; then
            t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
            say "$c: restart $r: all $N seeding after $t s"
            times+=("$t")
        else
            say "$c: restart $r: $(cat "$WORK/wait.err")"
            LOST[$c]="restart $r: $(sed 's/^daemon.py: [a-z]*: //' "$WORK/wait.err")"
            times+=("-")
        fi
    done
    RESTARTS[$c]=${times[*]}
    if [[ -n ${LOST[$c]:-} ]]; then
        RESTART[$c]=-
    else
        RESTART[$c]=$(printf '%s\n' "${times[@]}" | median)
    fi
    STOPS[$c]=${stops[*]}
    STOP[$c]=$(printf '%s\n' "${stops[@]}" | tr -d '!' | median)
    sleep 10 # settle: the announces of the start are done
    read -r u0 s0 < <(cpu_split "$PID")
    say "$c: idle for $IDLE s"
    sleep "$IDLE"
    read -r u1 s1 < <(cpu_split "$PID")
    RSS[$c]=$(rss_kib "$PID")
    CPU_U[$c]=$(ticks_to_s $((u1 - u0)))
    CPU_S[$c]=$(ticks_to_s $((s1 - s0)))
    LIST[$c]=$($PY "$DRV" list "$c" "$URL" 5 | awk '{ print $1 }' | median)
    stop "$PID"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
{
    machine_info "bench/daemon.sh ${ARGS[*]}"
    for c in "${LIST_CLIENTS[@]}"; do echo "$c: ${VERSION[$c]}"; done
    echo "torrents: $N of $SIZE bytes, data present, one local tracker (30 min interval)"
    echo
    printf '%-13s %9s %18s %22s %12s %22s %10s\n' client "load (s)" "stop (s)" "restart->seeding (s)" "idle RSS" "idle CPU ${IDLE}s u+s" "list (s)"
    for c in "${LIST_CLIENTS[@]}"; do
        printf '%-13s %9s %6s (%s) %10s (%s) %8.1f MiB %10s (%s+%s) %10s\n' "$c" "${LOAD[$c]}" \
            "${STOP[$c]}" "${STOPS[$c]// /, }" "${RESTART[$c]}" \
            "${RESTARTS[$c]// /, }" "$(awk -v k="${RSS[$c]}" 'BEGIN { print k / 1024 }')" \
            "$(awk -v u="${CPU_U[$c]}" -v s="${CPU_S[$c]}" 'BEGIN { printf "%.2f", u + s }')" \
            "${CPU_U[$c]}" "${CPU_S[$c]}" "${LIST[$c]}"
    done
    for c in "${LIST_CLIENTS[@]}"; do
        [[ -n ${LOST[$c]:-} ]] && echo "$c: not every torrent came back: ${LOST[$c]}"
    done
    if [[ -n ${RESTART[essaim]:-} ]]; then
        echo
        echo "essaim / other (below 1.00: essaim is lower):"
        for c in "${LIST_CLIENTS[@]}"; do
            [[ $c == essaim ]] && continue
            printf '  vs %-12s stop %s  restart %s  RSS %s  CPU %s  list %s\n' "$c" \
                "$(ratio "${STOP[essaim]}" "${STOP[$c]}")" \
                "$(ratio "${RESTART[essaim]}" "${RESTART[$c]}")" \
                "$(ratio "${RSS[essaim]}" "${RSS[$c]}")" \
                "$(ratio "$(awk -v u="${CPU_U[essaim]}" -v s="${CPU_S[essaim]}" 'BEGIN { print u + s }')" \
                    "$(awk -v u="${CPU_U[$c]}" -v s="${CPU_S[$c]}" 'BEGIN { print u + s }')")" \
                "$(ratio "${LIST[essaim]}" "${LIST[$c]}")"
        done
    fi
}

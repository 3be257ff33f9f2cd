# Shared helpers of the bench scripts (sourced, not run). See bench/README.md.
#
# Every process a script starts goes through `spawn` (its own session, so its
# whole process group can be signalled) and is stopped by the EXIT trap;
# every wait has a deadline.

# shellcheck disable=SC2034 # globals used by the scripts that source this
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3 # Debian's python: the one that has python3-libtorrent
LT_PY=$ROOT/tests/interop/lt.py
TOOLS=$BENCH_DIR/.tools # rqbit is installed here (gitignored)
CLK_TCK=$(getconf CLK_TCK)
PIDS=()
WORK=
BENCH_NAME=${BENCH_NAME:-bench}

# usage: print the script's header comment (its help) and exit 2.
usage() {
    awk 'NR > 1 && /^#/ { if ($0 ~ /shellcheck/) next; sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

say() { echo "$BENCH_NAME: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# bench_init NAME: work folder, traps. Keeps the logs (not the data) when the
# script fails, or everything with KEEP=1.
bench_init() {
    BENCH_NAME=$1
    WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/essaim-bench-$1.XXXXXX")
    mkdir -p "$WORK/logs"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# Commands bench_cleanup runs (e.g. to take back an address it added).
AT_EXIT=()

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_all
    local undo
    for undo in "${AT_EXIT[@]}"; do eval "$undo" || true; done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP:-0} == 1 ]]; then
            say "kept $WORK"
        elif ((rc != 0)); then
            find "$WORK" -type f -size +1M -delete 2>/dev/null || true
            say "kept the logs in $WORK/logs"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}

# ---- processes -------------------------------------------------------------

# spawn NAME CMD...: start CMD in the background in a new session (so that
# its process group id is its pid), stdout and stderr to
# $WORK/logs/NAME.out and .err. Sets SPAWNED to its pid.
spawn() {
    local name=$1
    shift
    setsid "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" </dev/null &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
}

# alive PID: the process exists and is not a zombie (no fork).
alive() {
    local line state
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
    state=${line##*) }
    state=${state%% *}
    [[ $state != Z && $state != X ]]
}

# stop PID: SIGTERM its process group, SIGKILL whatever is left after 5 s,
# reap it.
stop() {
    local pid=$1 i rest=()
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in "${PIDS[@]}"; do [[ $i == "$pid" ]] || rest+=("$i"); done
    PIDS=("${rest[@]}")
}

stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do stop "$p"; done
}

# cpu_ticks PID: user + system CPU time of the process so far, in clock ticks
# (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local line
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || {
        echo 0
        return
    }
    # shellcheck disable=SC2086
    set -- ${line##*) } # $1 is field 3 (state), so field N is $((N - 2))
    echo $((${12} + ${13}))
}

ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }

# peak_rss_kib PID: VmHWM of a running process.
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# wait_line SECS FILE REGEX WHAT [PID]: wait until FILE has a line matching
# REGEX; fails if PID dies first or after SECS.
wait_line() {
    local secs=$1 file=$2 re=$3 what=$4 pid=${5:-}
    local end=$((SECONDS + secs))
    until grep -Eq -- "$re" "$file" 2>/dev/null; do
        if [[ -n $pid ]] && ! alive "$pid"; then
            say "$what: the process exited first (see $file and ${file%.*}.err)"
            return 1
        fi
        if ((SECONDS >= end)); then
            say "$what: timed out after ${secs}s"
            return 1
        fi
        sleep 0.1
    done
}

# wait_until SECS WHAT CMD...: poll CMD every 0.2 s until it succeeds.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            say "$what: timed out after ${secs}s"
            return 1
        fi
        sleep 0.2
    done
}

# run_timed NAME SECS CMD...: run CMD under GNU time and a timeout of SECS,
# in its own session, and wait for it. Sets T_WALL T_USER T_SYS (seconds) and
# T_RSS (peak RSS, KiB); returns CMD's status (124 on timeout).
run_timed() {
    local name=$1 secs=$2 rc=0
    shift 2
    local tf=$WORK/logs/$name.time
    spawn "$name" /usr/bin/time -f '%e %U %S %M' -o "$tf" \
        timeout --foreground -k 5 "$secs" "$@"
    local pid=$SPAWNED
    wait "$pid" || rc=$?
    stop "$pid" # the group: nothing should be left, but be sure
    T_WALL=0 T_USER=0 T_SYS=0 T_RSS=0
    if [[ -s $tf ]]; then
        read -r T_WALL T_USER T_SYS T_RSS < <(tail -n 1 "$tf")
    fi
    return "$rc"
}

# ---- ports -----------------------------------------------------------------

# free_port: a free TCP port on 127.0.0.1 below the kernel's ephemeral range
# (so that no outgoing connection takes it before the client binds it), and
# not handed out before by this script: they are remembered in $WORK/ports,
# since callers run free_port in a subshell.
free_port() {
    $PY - "$WORK/ports" <<'EOF'
import random, socket, sys
used_file = sys.argv[1]
try:
    used = set(open(used_file).read().split())
except FileNotFoundError:
    used = set()
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(1000):
    port = random.randrange(10000, low - 1)
    if str(port) in used:
        continue
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    with open(used_file, "a") as f:
        f.write(f"{port}\n")
    print(port)
    break
else:
    sys.exit("free_port: no free port found")
EOF
}

# ---- Transmission ---------------------------------------------------------

# tr_settings FILE DOWNLOAD_DIR BIND_ADDR RPC_PORT PEER_PORT [EXTRA]: a
# transmission-daemon settings.json: peer port on BIND_ADDR, RPC on
# 127.0.0.1 without auth, no DHT/LPD/PEX/uTP, no limits or queues, torrents
# added start at once. EXTRA: more `"key": value,` pairs.
tr_settings() {
    cat >"$1" <<EOF
{
  "bind-address-ipv4": "$3", "bind-address-ipv6": "::1",
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false,
  "utp-enabled": false, "port-forwarding-enabled": false,
  "peer-port": $5, "peer-port-random-on-start": false,${6:+
  $6}
  "rpc-enabled": true, "rpc-bind-address": "127.0.0.1", "rpc-port": $4,
  "rpc-authentication-required": false,
  "rpc-whitelist-enabled": true, "rpc-whitelist": "127.0.0.1",
  "rpc-host-whitelist-enabled": false,
  "download-dir": "$2", "incomplete-dir-enabled": false,
  "speed-limit-down-enabled": false, "speed-limit-up-enabled": false,
  "alt-speed-enabled": false,
  "download-queue-enabled": false, "seed-queue-enabled": false,
  "queue-stalled-enabled": false,
  "ratio-limit-enabled": false, "idle-seeding-limit-enabled": false,
  "blocklist-enabled": false, "start-added-torrents": true,
  "message-level": 1
}
EOF
}

# tr_start NAME DOWNLOAD_DIR BIND_ADDR: a transmission-daemon with its own
# config folder, peer port on BIND_ADDR, RPC on 127.0.0.1, no DHT/LPD/PEX/uTP,
# no limits or queues; torrents added start at once (existing data in
# DOWNLOAD_DIR is verified first). Sets TR_RPC and TR_PID.
tr_start() {
    local name=$1 dir=$2 bind=$3 conf=$WORK/$1-config peer
    TR_RPC=$(free_port)
    peer=$(free_port)
    mkdir -p "$conf" "$dir"
    tr_settings "$conf/settings.json" "$dir" "$bind" "$TR_RPC" "$peer" '"encryption": 0,'
    spawn "$name" transmission-daemon -f -g "$conf"
    TR_PID=$SPAWNED
    wait_until 30 "transmission-daemon RPC" transmission-remote "127.0.0.1:$TR_RPC" -l
}
tr_done() { # RPC_PORT: torrent 1 is at 100% and not verifying
    local info
    info=$(transmission-remote "127.0.0.1:$1" -t 1 -i 2>/dev/null) || return 1
    [[ $info == *"Percent Done: 100%"* && $info != *"State: Verif"* ]]
}

# ---- sizes and numbers -----------------------------------------------------

# parse_size TEXT: bytes; units K/KiB/M/MiB/G/GiB/T/TiB are binary (like
# essaim's parse_size), no unit means bytes.
parse_size() {
    local t=${1// /} n u
    [[ $t =~ ^([0-9]+)([A-Za-z]*)$ ]] || die "bad size: $1"
    n=${BASH_REMATCH[1]}
    u=${BASH_REMATCH[2],,}
    case $u in
    "" | b) echo "$n" ;;
    k | kb | kib) echo $((n << 10)) ;;
    m | mb | mib) echo $((n << 20)) ;;
    g | gb | gib) echo $((n << 30)) ;;
    t | tb | tib) echo $((n << 40)) ;;
    *) die "bad size unit in $1" ;;
    esac
}

# human_size BYTES: 1 GiB, 256 KiB, 12345 B.
human_size() {
    local b=$1
    if ((b >= 1 << 30 && b % (1 << 30) == 0)); then
        echo "$((b >> 30)) GiB"
    elif ((b >= 1 << 20 && b % (1 << 20) == 0)); then
        echo "$((b >> 20)) MiB"
    elif ((b >= 1 << 10 && b % (1 << 10) == 0)); then
        echo "$((b >> 10)) KiB"
    else
        echo "$b B"
    fi
}

# ---- setup -----------------------------------------------------------------

# as_root CMD...: CMD as root (directly, or with sudo -n).
as_root() {
    if [[ $(id -u) == 0 ]]; then
        "$@"
    else
        command -v sudo >/dev/null 2>&1 && sudo -n "$@"
    fi
}

# ensure_packages SPEC...: SPEC is COMMAND:PACKAGE (COMMAND may be a path, or
# `libtorrent` for /usr/bin/python3's module). Installs the packages of the
# missing commands with apt-get (apt-get update first).
ensure_packages() {
    local spec c p missing=()
    for spec in "$@"; do
        c=${spec%%:*}
        p=${spec#*:}
        if [[ $c == libtorrent ]]; then
            $PY -c 'import libtorrent' >/dev/null 2>&1 && continue
        elif [[ $c == /* ]]; then
            [[ -x $c ]] && continue
        else
            command -v "$c" >/dev/null 2>&1 && continue
        fi
        [[ " ${missing[*]} " == *" $p "* ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]} (Debian packages)"
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install ${missing[*]}"
        sudo=(sudo -n)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}" </dev/null >&2
}

# build_essaim: cargo build --release -p essaim-cli; sets ESSAIM. ESSAIM_BIN
# set in the environment skips the build (for trying a given binary).
build_essaim() {
    if [[ -n ${ESSAIM_BIN:-} ]]; then
        ESSAIM=$ESSAIM_BIN
        [[ -x $ESSAIM ]] || die "ESSAIM_BIN=$ESSAIM is not executable"
        say "using ESSAIM_BIN=$ESSAIM (not rebuilt)"
    else
        say "cargo build --release -p essaim-cli"
        (cd "$ROOT" && cargo build --release -p essaim-cli >&2) || die "cargo build failed"
        ESSAIM=${CARGO_TARGET_DIR:-$ROOT/target}/release/essaim
        [[ $ESSAIM == /* ]] || ESSAIM=$ROOT/$ESSAIM
    fi
    [[ -x $ESSAIM ]] || die "no binary at $ESSAIM"
    # A private copy: a rebuild in the workspace during the run cannot swap
    # the binary under the benchmark.
    cp "$ESSAIM" "$WORK/essaim"
    ESSAIM=$WORK/essaim
}

# make_random_file PATH BYTES (not from /dev/zero: nothing compresses it).
make_random_file() {
    local path=$1 bytes=$2
    mkdir -p "$(dirname "$path")"
    head -c "$bytes" /dev/urandom >"$path"
}

# warm_cache PATH: read it so that it is in the page cache.
warm_cache() { cat "$1" >/dev/null; }

# machine_info ARGS...: the header every table comes with.
machine_info() {
    local model mem rev
    model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null; then
        rev+=" (with uncommitted changes)"
    fi
    echo "command:  $*"
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine:  $(nproc) cores (nproc), ${model:-unknown CPU}, $mem RAM, kernel $(uname -r)"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the measurements"
    echo "essaim:   $rev"
}

# sha1_single_core_mbps: SHA-1 speed of one core in MB/s (10^6 B/s), from
# `openssl speed -evp sha1 -bytes 1048576 -seconds 3` (one process, one
# thread; uses the SHA extensions when the CPU has them, like the sha1 crate).
sha1_single_core_mbps() {
    openssl speed -evp sha1 -bytes 1048576 -seconds 3 2>/dev/null |
        awk '/^(sha1|SHA1)/ { v = $NF; sub(/k$/, "", v); printf "%.0f", v * 1000 / 1e6 }'
}

#!/usr/bin/env bash
# One seeder and N leechers on 127.0.0.1, every upload capped, for essaim and
# for libtorrent; time until the last leecher completes, next to the physical
# bound. See bench/README.md.
#
#   bench/swarm.sh [N] [--size SIZE] [--piece-size SIZE] [--upload-limit RATE]
#                  [--clients LIST] [--timeout SECS]
#
# Defaults: N = 20 leechers, a 64MiB file, 256KiB pieces, every upload
# (the seeder's too) capped at 1MiB per second, no download cap, clients
# essaim,libtorrent, timeout 3 x the bound + 60 s. Each leecher is its own
# process; the tracker is `essaim tracker` (a fresh one per client).
# Needs root (or sudo) the first time, to install Debian packages.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ARGS="$0 $*"
N=20
SIZE=64MiB
PIECE=256KiB
UPLOAD=1MiB
CLIENTS=essaim,libtorrent
TIMEOUT=0

while (($#)); do
    case $1 in
    --size) SIZE=${2:?}; shift 2 ;;
    --piece-size) PIECE=${2:?}; shift 2 ;;
    --upload-limit) UPLOAD=${2:?}; shift 2 ;;
    --clients) CLIENTS=${2:?}; shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "swarm.sh: unknown option $1" >&2; usage ;;
    *) N=$1; shift ;;
    esac
done
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number"
for c in ${CLIENTS//,/ }; do
    case $c in essaim | libtorrent) ;; *) die "unknown client $c (essaim, libtorrent)" ;; esac
done

bench_init swarm
pkgs=()
[[ ",$CLIENTS," == *,libtorrent,* ]] && pkgs+=(libtorrent:python3-libtorrent)
((${#pkgs[@]} == 0)) || ensure_packages "${pkgs[@]}"
[[ -x $PY ]] || die "$PY is missing (package python3)"
build_essaim

HEADER=$(machine_info "$ARGS")
say "running the swarms (progress below, the table at the end)"
setsid "$PY" "$BENCH_DIR/swarm.py" --essaim "$ESSAIM" --work "$WORK" --leechers "$N" \
    --size "$(parse_size "$SIZE")" --piece-size "$(parse_size "$PIECE")" \
    --upload-limit "$(parse_size "$UPLOAD")" --clients "$CLIENTS" --timeout "$TIMEOUT" \
    >"$WORK/table.txt" </dev/null &
PIDS+=($!)
rc=0
wait "$!" || rc=$?
echo
echo "$HEADER"
echo "clients:  essaim $("$ESSAIM" --version | awk '{print $2}')$(
    [[ ",$CLIENTS," == *,libtorrent,* ]] && echo ", libtorrent $($PY -c 'import libtorrent; print(libtorrent.__version__)') (bench/lt_bench.py)"
)"
cat "$WORK/table.txt"
exit "$rc"

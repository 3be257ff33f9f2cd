#!/usr/bin/env bash
# CI check that the bench scripts still start and finish: each runs once on
# tiny inputs, bounded; exit 0 when all four succeed. About a minute after
# the build (done first, once; the scripts then use that binary through
# ESSAIM_BIN instead of building again).
#
#   bench/smoke.sh
#
# The numbers printed mean nothing at these sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
run() { # SECS CMD...
    local secs=$1 rc=0
    shift
    step "$*"
    timeout -k 30 "$secs" "$@" || rc=$?
    if ((rc == 124)); then
        echo "smoke.sh: FAILED (timed out after ${secs}s): $*" >&2
        exit 1
    elif ((rc != 0)); then
        echo "smoke.sh: FAILED (status $rc): $*" >&2
        exit 1
    fi
}

# Build once here, outside the scripts' time limits (a build can wait for
# cargo's lock); the scripts then use this binary instead of building.
step "cargo build --release -p essaim-cli"
timeout 3600 cargo build --release -p essaim-cli
ESSAIM_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/essaim
[[ $ESSAIM_BIN == /* ]] || ESSAIM_BIN=$PWD/$ESSAIM_BIN
export ESSAIM_BIN

SECONDS=0
run 180 bench/transfer.sh 4MiB --runs 1 --clients essaim,libtorrent
run 120 bench/create.sh 16MiB --runs 1
run 120 bench/swarm.sh 3 --size 4MiB
run 180 bench/daemon.sh 20 --runs 1 --idle 2 --clients essaim,transmission
step "smoke.sh: all bench scripts ran (${SECONDS}s after the build)"

#!/usr/bin/env bash
# The test command: ./test.sh [extra args for `cargo test`]
#
# Installs the BitTorrent clients the interop tests talk to (Debian packages:
# Transmission 3, aria2, python3-libtorrent) when they are missing, then runs
# rustfmt, clippy, the whole workspace's tests in release mode, the HTTP API
# against its OpenAPI document (schemathesis from PyPI, in a virtualenv under
# target/), the fuzz targets' build (nightly) and a smoke run of the bench
# scripts.
# Runs as root on Debian 12, or as a user who already has the clients.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*" >&2; }

PACKAGES=(transmission-daemon transmission-cli aria2 python3-libtorrent)

have_clients() {
    local p
    for p in transmission-daemon transmission-remote transmission-create aria2c; do
        command -v "$p" >/dev/null 2>&1 || return 1
    done
    /usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1
}

if have_clients; then
    step "interop clients already installed"
else
    step "installing interop clients: ${PACKAGES[*]}"
    SUDO=()
    if [[ $(id -u) != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "test.sh: need root (or sudo) to install ${PACKAGES[*]}" >&2
            exit 1
        }
        SUDO=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update </dev/null
    "${SUDO[@]}" apt-get install -y "${PACKAGES[@]}" </dev/null
fi

if ! /usr/bin/python3 -c 'import libtorrent' 2>/dev/null; then
    echo "test.sh: /usr/bin/python3 cannot import libtorrent (package python3-libtorrent)" >&2
    exit 1
fi
echo "transmission: $(transmission-daemon --version 2>&1 | head -n1)" >&2
echo "aria2:        $(aria2c --version | head -n1)" >&2
echo "libtorrent:   $(/usr/bin/python3 -c 'import libtorrent; print(libtorrent.__version__)')" >&2

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "pure crates do not depend on tokio"
for crate in essaim-core essaim-wire essaim-proto; do
    if cargo tree -e normal -p "$crate" -i tokio 2>/dev/null | grep -q '^tokio v'; then
        echo "test.sh: $crate must not depend on tokio:" >&2
        cargo tree -e normal -p "$crate" -i tokio >&2
        exit 1
    fi
done

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace --release $*"
cargo test --workspace --release "$@"

step "the API held to its OpenAPI document (tests/api/schemathesis.sh)"
cargo build --release -p essaim-cli
tests/api/schemathesis.sh target/release/essaim

step "fuzz targets build (fuzz/build.sh: cargo +nightly fuzz build)"
fuzz/build.sh

step "bench scripts still start (bench/smoke.sh, tiny sizes)"
bench/smoke.sh

step "all tests passed"

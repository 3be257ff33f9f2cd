#!/usr/bin/env bash
# Builds every fuzz target (what CI runs). Needs the nightly toolchain;
# installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: the nightly toolchain is missing; cargo-fuzz needs it." >&2
    echo "       install it with: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build "$@"

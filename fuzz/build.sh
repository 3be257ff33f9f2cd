#!/usr/bin/env bash
# Builds every fuzz target (what CI runs). Needs the nightly toolchain;
# installs cargo-fuzz when it is missing.
#
# The fuzzed crates are safe Rust (no `unsafe`), so the targets are built
# without AddressSanitizer by default: it made them about 4x slower and
# could find nothing that safe Rust does not already check. Debug
# assertions and overflow checks stay on. FUZZ_SANITIZER=address (or any
# `cargo fuzz --sanitizer` value) brings it back; run.sh uses the same
# setting, so it does not rebuild.
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
cargo +nightly fuzz build --sanitizer "${FUZZ_SANITIZER:-none}" "$@"

#!/usr/bin/env bash
# The CI step for the fuzzers: installs what scripts/fuzz.sh needs if it is missing (the nightly
# toolchain, cargo-fuzz from crates.io) and runs every target for FUZZ_SECONDS (default 15) each.
# Exits non-zero on a finding; the input is then in the owning crate's tests/fuzz/TARGET/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
exec "$repo/scripts/fuzz.sh" "${FUZZ_SECONDS:-15}"

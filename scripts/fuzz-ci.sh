#!/usr/bin/env bash
# The short run of the fuzzers, CI's last step (.ci/run): installs
# what scripts/fuzz.sh needs if it is missing (the nightly toolchain, cargo-fuzz from crates.io)
# and runs every target for FUZZ_SECONDS (default 5) each,
# built unoptimised without a sanitizer (FUZZ_BUILD=dev, FUZZ_SANITIZER=none: the optimised
# AddressSanitizer build took 13 minutes on a busy 2-core machine, the dev build 4; the targets are
# safe Rust, so what the short run looks for is panics, hangs and memory blow-ups).
# Exits non-zero on a finding; the input is then in the owning crate's tests/fuzz/TARGET/.
# The seed is fixed (FUZZ_SEED, default 1): from a fresh clone's committed corpus each CI run
# draws the same inputs, so a finding is the code's doing, not a draw's, and
# `FUZZ_SEED=1 scripts/fuzz.sh 5 TARGET` reproduces it. Exploring new inputs is the job of the
# long runs (scripts/fuzz.sh, a random seed each time; fuzz/README.md).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# An unoptimised cargo-fuzz: it only drives cargo and libFuzzer, and builds in 30 s instead of
# about 100.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --debug
export FUZZ_BUILD=${FUZZ_BUILD:-dev} FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} FUZZ_SEED=${FUZZ_SEED:-1}
# FUZZ_BUILD_ONLY=1: install and build, run nothing (.ci/run builds in the background, at idle
# priority, while its other steps run).
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
    exec "$repo/scripts/fuzz.sh" --build-only
fi
exec "$repo/scripts/fuzz.sh" "${FUZZ_SECONDS:-5}"

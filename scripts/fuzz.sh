#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (libFuzzer; needs the nightly toolchain and cargo-fuzz)
# for SECONDS each, one after the other, and exits non-zero if any target crashed, hung (an input
# over 10 s) or ran out of memory (over 2 GB).
#
#   scripts/fuzz.sh SECONDS [TARGET...]     every target (`cargo fuzz list`), or the ones named
#   scripts/fuzz.sh --build-only             build them, run nothing
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET/, read only) and its working
# corpus (fuzz/corpus/TARGET/, ignored by git, growing across runs); its output goes to
# fuzz/artifacts/TARGET.log. A finding (crash-*, timeout-*, oom-*, leak-* in fuzz/artifacts/TARGET/)
# is copied into the regression directory of the crate whose tests/fuzz_regressions.rs lists
# TARGET (e.g. cifar-data/tests/fuzz/TARGET/): fix the bug and commit the file, and `cargo test`
# replays it on stable from then on.
#
# FUZZ_SANITIZER: address (default) or none (builds and runs faster; the targets are safe Rust).
# FUZZ_BUILD: release (default: optimised, with debug assertions) or dev (unoptimised: builds in
# about a third of the time, runs slower; what CI uses for its short runs).
# FUZZ_SEED: libFuzzer's -seed (default: a new random one each run, which explores more): with a
# fixed seed a run from the same corpus draws the same inputs, so a finding reproduces.
set -euo pipefail

secs=${1:?usage: scripts/fuzz.sh SECONDS|--build-only [TARGET...]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo/fuzz"
sanitizer=${FUZZ_SANITIZER:-address}
case ${FUZZ_BUILD:-release} in
  release) build=() ;;
  dev) build=(--dev) ;;
  *) echo "fuzz.sh: FUZZ_BUILD must be release or dev, not ${FUZZ_BUILD}" >&2; exit 2 ;;
esac
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
nice -n 10 cargo +nightly fuzz build "${build[@]}" --sanitizer "$sanitizer"
[ "$secs" = --build-only ] && exit 0

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t.log"
  echo "== $t: ${secs}s"
  set +e
  nice -n 10 cargo +nightly fuzz run "${build[@]}" --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} >"$log" 2>&1
  status=$?
  set -e
  runs=$(awk '/^stat::number_of_executed_units/ { print $2 }' "$log" | tail -1)
  grep -E '^(Done [0-9]+ runs|SUMMARY|==[0-9]+==ERROR)|panicked at|Test unit written' "$log" || true
  findings=()
  for f in "artifacts/$t"/*; do
    case $(basename "$f") in crash-* | timeout-* | oom-* | leak-*) findings+=("$f") ;; esac
  done
  if [ "$status" -ne 0 ] || [ "${#findings[@]}" -gt 0 ]; then
    failed+=("$t")
    owner=$(grep -l "(\"$t\"" "$repo"/*/tests/fuzz_regressions.rs 2>/dev/null | head -1 || true)
    if [ -n "$owner" ] && [ "${#findings[@]}" -gt 0 ]; then
      dest="$(dirname "$owner")/fuzz/$t"
      mkdir -p "$dest"
      cp "${findings[@]}" "$dest/"
      echo "   findings copied to ${dest#"$repo"/}/"
    fi
    summary+=("$t: FAILED (exit $status, ${#findings[@]} findings) after ${runs:-?} runs; see fuzz/$log")
  else
    summary+=("$t: ok, ${runs:-?} runs in ${secs} s, corpus of $(ls "corpus/$t" | wc -l) inputs")
  fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failing targets: ${failed[*]}" >&2
  exit 1
fi

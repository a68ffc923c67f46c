#!/usr/bin/env bash
# Training images/s of `trainer bench --device cpu` against TensorFlow (scripts/tf_seed.py) on the
# same networks, the two run alternately ROUNDS times per preset so that both see the same load;
# prints each run's figure and the medians.
#
#   scripts/cpu-vs-tf.sh [ROUNDS]        # default 3; presets seed (batch 64), small (250), tiny (100)
#
# Environment: TRAINER (default target/release/trainer), TF_PYTHON (a Python with TensorFlow,
# default python3), PRESETS (default "seed:64 small:250 tiny:100"), STEPS_seed etc. (timed steps
# per run; defaults 3, 5, 10), EXTRA (more flags for trainer bench, e.g. "--conv-calibration off"),
# PRECISION (fp32 or bf16, default fp32: both sides run it; bf16 is `trainer bench --precision
# bf16` against Keras' mixed_bfloat16 policy), OURS_PRECISION (ours alone in another mode, e.g.
# OURS_PRECISION=bf16 against TensorFlow's default fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
TRAINER=${TRAINER:-target/release/trainer}
TF_PYTHON=${TF_PYTHON:-python3}
PRESETS=${PRESETS:-"seed:64 small:250 tiny:100"}
PRECISION=${PRECISION:-fp32}
OURS_PRECISION=${OURS_PRECISION:-$PRECISION}
[[ -x $TRAINER ]] || { echo "cpu-vs-tf: no $TRAINER; run cargo build --release -p trainer" >&2; exit 1; }

steps_for() {
    case $1 in seed) echo "${STEPS_seed:-3}" ;; small) echo "${STEPS_small:-5}" ;; *) echo "${STEPS_tiny:-10}" ;; esac
}
# The images/s of the "training:" line.
images_per_s() { sed -n 's/^training:.* \([0-9.]*\) images\/s.*/\1/p' | head -1; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "cpu-vs-tf: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs," \
     "load $(cut -d' ' -f1-3 /proc/loadavg), $ROUNDS rounds, precision: ours $OURS_PRECISION, TensorFlow $PRECISION"
for spec in $PRESETS; do
    preset=${spec%:*} batch=${spec#*:} steps=$(steps_for "${spec%:*}")
    ours=() tf=()
    for ((r = 1; r <= ROUNDS; r++)); do
        # shellcheck disable=SC2086
        o=$("$TRAINER" bench --preset "$preset" --batch-size "$batch" --device cpu --steps "$steps" --precision "$OURS_PRECISION" ${EXTRA:-} | images_per_s)
        t=$("$TF_PYTHON" scripts/tf_seed.py --preset "$preset" --batch-size "$batch" --steps "$steps" --precision "$PRECISION" 2>/dev/null | images_per_s)
        echo "  $preset batch $batch round $r: ours $o images/s, TensorFlow $t images/s (load $(cut -d' ' -f1 /proc/loadavg))"
        ours+=("$o") tf+=("$t")
    done
    mo=$(printf '%s\n' "${ours[@]}" | median) mt=$(printf '%s\n' "${tf[@]}" | median)
    echo "RESULT $preset batch $batch: ours $mo images/s, TensorFlow $mt images/s, ours/TF $(awk -v a="$mo" -v b="$mt" 'BEGIN {printf "%.2f", a / b}')"
done

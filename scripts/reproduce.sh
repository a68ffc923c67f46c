#!/usr/bin/env bash
# Reproduces the seed's result in one command: gets CIFAR-100 (already there, downloaded, or
# installed from --archive), trains the seed's recipe (every default of `trainer train`) on the best
# device present (a CUDA GPU if the trainer can use one, else the CPU), evaluates the last
# checkpoint, and writes REPORT.md in the run directory: the seed's published figures beside this
# run's last epoch, the curves, the exact commands, the commit, device, precision and wall time.
#
#   scripts/reproduce.sh [--run-dir DIR] [--data DIR] [--archive FILE] [--epochs N]
#                        [--device D] [--precision P] [--trainer PATH]
#                        [--synthetic [--synth-train N] [--synth-test N]] [--preset P]
#                        [-- EXTRA TRAIN FLAGS]
#
# --run-dir    where the run writes (default runs/reproduce); REPORT.md, train.log, eval.txt go there
# --data       the dataset directory (default data); downloaded there when incomplete
# --archive    install cifar-100-binary.tar.gz from this file instead of downloading it
# --epochs     fewer epochs than the seed's 75, for a smoke test (the report says so)
# --device     auto (default: cuda when the trainer sees a GPU, else cpu), cpu, cuda[:N]
# --precision  passed to `trainer train --precision` when the trainer has that flag (default fp32)
# --trainer    a trainer binary to use instead of building target/release/trainer
# --synthetic  the built-in synthetic dataset instead of CIFAR-100 (a quick check of the script;
#              with --preset tiny and --epochs 1 it takes seconds)
# Flags after `--` go to `trainer train` as they are.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "reproduce.sh: $*" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
invocation=("$0" "$@")
run_dir=runs/reproduce
data=data
archive=
epochs=
device=auto
precision=fp32
trainer=
synthetic=0
synth_train=
synth_test=
preset=
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --run-dir) run_dir=${2:?--run-dir needs a directory}; shift 2 ;;
        --data) data=${2:?--data needs a directory}; shift 2 ;;
        --archive) archive=${2:?--archive needs a file}; shift 2 ;;
        --epochs) epochs=${2:?--epochs needs a number}; shift 2 ;;
        --device) device=${2:?--device needs a device}; shift 2 ;;
        --precision) precision=${2:?--precision needs a value}; shift 2 ;;
        --trainer) trainer=${2:?--trainer needs a path}; shift 2 ;;
        --synthetic) synthetic=1; shift ;;
        --synth-train) synth_train=${2:?--synth-train needs a number}; shift 2 ;;
        --synth-test) synth_test=${2:?--synth-test needs a number}; shift 2 ;;
        --preset) preset=${2:?--preset needs a name}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$archive" ] && [ "$synthetic" = 1 ] && die "--archive and --synthetic exclude each other"

if [ -z "$trainer" ]; then
    (cd "$root" && cargo build --release -p trainer)
    trainer=$root/target/release/trainer
fi
[ -x "$trainer" ] || die "no trainer binary at $trainer"
mkdir -p "$run_dir"

# The dataset.
if [ "$synthetic" = 1 ]; then
    data_flags=(--dataset synthetic)
    [ -n "$synth_train" ] && data_flags+=(--synth-train "$synth_train")
    [ -n "$synth_test" ] && data_flags+=(--synth-test "$synth_test")
    dataset="the built-in synthetic dataset (not CIFAR-100)"
else
    if [ -n "$archive" ]; then
        "$trainer" download --help | grep -q -- '--archive' ||
            die "this trainer has no 'download --archive'; unpack $archive into $data by hand"
        "$trainer" download --dataset cifar100 --dir "$data" --archive "$archive"
    else
        # Keeps a complete copy, downloads (MD5-checked) otherwise.
        "$trainer" download --dataset cifar100 --dir "$data"
    fi
    data_flags=(--data "$data" --dataset cifar100)
    dataset="CIFAR-100 from $data"
fi

# The run: the seed's recipe, every default, on the chosen device.
train=("$trainer" train "${data_flags[@]}" --out "$run_dir" --device "$device")
[ -n "$epochs" ] && train+=(--epochs "$epochs")
[ -n "$preset" ] && train+=(--preset "$preset")
if "$trainer" train --help | grep -q -- '--precision'; then
    train+=(--precision "$precision")
else
    precision="fp32 (this trainer computes in fp32 only)"
fi
train+=("${extra[@]}")
started=$(date +%s)
"${train[@]}" 2>&1 | tee "$run_dir/train.log"
trained=$(date +%s)
eval_cmd=("$trainer" eval --checkpoint "$run_dir/last.safetensors" --device "$device")
"${eval_cmd[@]}" > "$run_dir/eval.txt"
finished=$(date +%s)

# The figures: the last epoch's row of metrics.csv, and eval's reading of last.safetensors.
metric() { # metric COLUMN: the last row's value of COLUMN in metrics.csv (empty if none)
    awk -F, -v col="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        c { v = $c } END { print v }' "$run_dir/metrics.csv"
}
pct() { [ -n "$1" ] && awk -v v="$1" 'BEGIN { printf "%.2f%%", 100 * v }' || echo "not measured"; }
num() { awk -v v="$1" 'BEGIN { printf "%.4f", v }'; }
hms() { printf '%d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60)); }
quote() { printf '%q ' "$@" | sed 's/ $//'; }
epoch=$(metric epoch)
[ -n "$epoch" ] || die "no epoch finished: see $run_dir/train.log"
device_line=$(grep -m1 '^device: ' "$run_dir/train.log" | sed 's/^device: //')
commit=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes)"
fi
epochs_run=$(grep -m1 '^epochs = ' "$run_dir/config.toml" | sed 's/^epochs = //')
caveats=()
[ "$synthetic" = 1 ] && caveats+=("the data is the synthetic dataset, not CIFAR-100")
[ "${epochs_run:-75}" != 75 ] && caveats+=("--epochs $epochs_run, not the seed's 75")
[ -n "$preset" ] && [ "$preset" != seed ] && caveats+=("the $preset network, not the seed's")
[ ${#extra[@]} -gt 0 ] && caveats+=("extra flags: $(quote "${extra[@]}")")

{
    echo "# Reproducing the seed's CIFAR-100 result"
    echo
    if [ ${#caveats[@]} -gt 0 ]; then
        echo "**Not the seed's recipe:** $(printf '%s; ' "${caveats[@]}" | sed 's/; $//')."
        echo
    fi
    echo "| | test top-1 | test top-5 | train-set accuracy | test loss |"
    echo "| --- | --- | --- | --- | --- |"
    echo "| the seed (TensorFlow, 2019; last epoch, published) | 70.7% | | 99.5% | 1.2815 |"
    echo "| this run, last epoch ($epoch; \`last.safetensors\`) | $(pct "$(metric test_top1)") |" \
        "$(pct "$(metric test_top5)") | $(pct "$(metric train_eval_acc)") | $(num "$(metric test_loss)") |"
    echo
    echo "Both rows are last-epoch figures, as the seed reported them. \`best.safetensors\` is the"
    echo "epoch with the best test accuracy: best on the test set, so optimistic, and not compared here."
    echo
    echo "\`trainer eval\` of \`last.safetensors\` ([eval.txt](eval.txt)):"
    echo
    echo '```text'
    grep -E '^(checkpoint|preprocess|test images|test loss|top-1|top-5)' "$run_dir/eval.txt"
    echo '```'
    echo
    echo "## Curves"
    echo
    for plot in loss_per_epoch accuracy_per_epoch loss_per_step accuracy_per_step; do
        [ -f "$run_dir/$plot.png" ] && echo "![$plot]($plot.png)"
    done
    echo
    echo -n "Per-epoch figures: [metrics.csv](metrics.csv)"
    [ -f "$run_dir/steps.csv" ] && echo -n "; per logged step: [steps.csv](steps.csv)"
    echo "."
    echo
    echo "## How it ran"
    echo
    echo "- command: \`$(quote "${invocation[@]}")\`"
    echo "- training: \`$(quote "${train[@]}")\`"
    echo "- evaluation: \`$(quote "${eval_cmd[@]}")\`"
    echo "- data: $dataset"
    echo "- commit: $commit"
    echo "- device: ${device_line:-unknown}"
    echo "- precision: $precision"
    echo "- wall time: $(hms $((trained - started))) training (evaluation after every epoch" \
        "included), $(hms $((finished - trained))) final evaluation"
    echo "- settings: [config.toml](config.toml); log: [train.log](train.log)"
} > "$run_dir/REPORT.md"
echo "report: $run_dir/REPORT.md"

#!/usr/bin/env bash
# The one prepared script for a lent GPU. Two halves:
#
#   scripts/gpu-check.sh build   here (no GPU needed): builds, strips and puts in target/gpu-check/
#                                the kernels crate's test binary (the parity suite), the CUDA
#                                criterion benches and the release `trainer`, and checks that they
#                                fit the device tool's 64 MiB carry limit.
#   scripts/gpu-check.sh run     on the device machine (CUDA 13.0 and PyTorch, no Rust), in one
#                                call of under 8 minutes, each part under its own time limit and a
#                                failing part never stopping the others:
#                                1. GPU facts (nvidia-smi);
#                                2. PyTorch smoke run on the CPU (scripts/torch_seed.py, batch 2);
#                                3. the CPU-versus-CUDA parity suite on GPU 0 (the `gpu_*` tests,
#                                   ignored elsewhere; NVRTC compiles for the card's architecture);
#                                4. `trainer bench --device cuda`: the seed network's training step
#                                   at batch 250 (our images/s, with the per-layer profile), in
#                                   each --precision (fp32, tf32, bf16);
#                                5. the same network in PyTorch at batch 250, fp32 with TF32 off
#                                   and on, and AMP bf16 with channels_last (scripts/torch_seed.py);
#                                6. a one-epoch synthetic training run of the seed network at batch
#                                   250 in each precision of TRAIN_PRECISIONS (`trainer synth`,
#                                   then `trainer train --device cuda --epochs 1 --precision M`),
#                                   the training set sized from step 4's fp32 images/s so that the
#                                   fp32 run fits its share of TRAIN_BUDGET_S (50,000 images, a
#                                   full CIFAR epoch, when that fits; the log says which size ran
#                                   and why); each mode's loss curve (steps.csv) compared with
#                                   fp32's (see compare_curves);
#                                7. memory over a long run: the small network for 20 short
#                                   epochs on the GPU, the device's used memory and the resident
#                                   set after epoch 20 within 5% of epoch 2 (metrics.csv's gpu_mib
#                                   and rss_mib); then a batch far too large for the card must stop
#                                   with the out-of-memory error naming it;
#                                8. the CUDA criterion benches (cuBLAS SGEMM as the yardstick).
#                                Everything lands in $OUT: gpu-check.log (the whole run),
#                                summary.txt (each part's exit status and the lines to copy into
#                                BENCHMARKS.md), torch_seed.txt, bench-{fp32,tf32,bf16}.txt
#                                (bench.txt: fp32's), train-metrics-M.csv, train-steps-M.csv,
#                                memory-metrics.csv, memory-oom.txt, cuda-bench.txt.
#
# Here, the synthetic epoch alone on the CPU (a test of this script; fp32, or also bf16 on a CPU
# with AVX-512 BF16):
#   OUTDIR=/tmp/o TRAIN_BUDGET_S=1 TRAIN_DEVICE=cpu TRAIN_PRESET=tiny TRAIN_PRECISIONS=fp32 \
#       scripts/gpu-check.sh synthetic-epoch
# and its memory check (step 7) on the CPU:
#   OUTDIR=/tmp/o TRAIN_DEVICE=cpu MEMORY_PRESET=tiny scripts/gpu-check.sh memory
#
# Device call: run(command="bash scripts/gpu-check.sh run", carry=["target/gpu-check"],
#                  timeout_s=540). Every part stops at the run's deadline, GPU_CHECK_BUDGET_S (470 s).
# GPU_CHECK_PARTS=parity,bench,... runs only the parts named (see `want`); CUDA_BENCH_FILTER
# narrows the criterion benches, e.g. CUDA_BENCH_FILTER=conv2d.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=target/gpu-check
# The device tool carries at most 64 MiB with the working tree.
CARRY_LIMIT_MIB=48

# The executable cargo built for target `$1` (its JSON messages on stdin).
artifact() {
    python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1" | tail -1
}

build() {
    set -e
    mkdir -p "$DIR"
    local bin
    bin=$(cargo test -p kernels --lib --no-run --message-format=json | artifact kernels)
    cp "$bin" "$DIR/kernels-tests"
    bin=$(cargo bench -p benches --bench cuda --no-run --message-format=json | artifact cuda)
    cp "$bin" "$DIR/cuda-bench"
    bin=$(cargo build --release -p trainer --bin trainer --message-format=json | artifact trainer)
    cp "$bin" "$DIR/trainer"
    strip "$DIR/kernels-tests" "$DIR/cuda-bench" "$DIR/trainer"
    ls -l "$DIR"
    local mib
    mib=$(du -sm "$DIR" | cut -f1)
    if [ "$mib" -gt "$CARRY_LIMIT_MIB" ]; then
        echo "target/gpu-check is $mib MiB, over the $CARRY_LIMIT_MIB MiB this script allows" >&2
        exit 1
    fi
    echo "target/gpu-check: $mib MiB (carry limit 64 MiB with the working tree)"
}

# ---- the device half -------------------------------------------------------------------------

RESULTS=()
# Whether part KEY is asked for: GPU_CHECK_PARTS (a comma-separated list of PARTS' keys, checked
# by `run`) or, unset, every part.
want() {
    [ -z "${GPU_CHECK_PARTS:-}" ] || [[ ",$GPU_CHECK_PARTS," == *",$1,"* ]]
}

# part NAME CAP_S CMD...: runs CMD under `timeout`, at most CAP_S seconds and never past the
# deadline; records NAME's exit status (124: stopped at its limit) and goes on whatever happens.
part() {
    local name=$1 cap=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 5 ]; then
        echo "== $name: skipped, the run's time budget is spent"
        RESULTS+=("$name: skipped (time budget spent)")
        return
    fi
    echo "== $name (limit ${limit}s): $*"
    local t0=$(date +%s) rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    local took=$(($(date +%s) - t0))
    echo "== $name: exit $rc after ${took}s"
    RESULTS+=("$name: exit $rc after ${took}s$([ "$rc" = 124 ] && echo ' (stopped at its time limit)')")
}

# Step 4 in each precision: `trainer bench` of the seed network at batch 250, into
# bench-M.txt (and fp32's also into bench.txt, which step 6 sizes its epoch from). A mode that
# fails does not stop the others; the exit status is the last failure's.
bench_modes() {
    local m rc=0
    for m in fp32 tf32 bf16; do
        echo "-- trainer bench --precision $m"
        "$DIR/trainer" bench --device cuda --preset seed --batch-size 250 --steps 5 --profile \
            --precision "$m" > "$OUTDIR/bench-$m.txt" 2>&1 || rc=$?
        cat "$OUTDIR/bench-$m.txt"
    done
    cp "$OUTDIR/bench-fp32.txt" "$OUTDIR/bench.txt" 2>/dev/null
    return $rc
}

# The seed network's training images/s of `trainer bench` (step 4), or empty.
bench_images_per_s() {
    sed -n 's/^training: .* \([0-9.]*\) images\/s.*/\1/p' "$OUTDIR/bench.txt" 2>/dev/null | tail -1
}

# The synthetic set of step 6: a full epoch's 50,000 images when that fits TRAIN_BUDGET_S at the
# measured speed, else as many whole batches of 250 as fit (at least 4); 2,500 images when step 4
# measured nothing.
synthetic_size() {
    local ips=$1 budget=$2
    python3 - "$ips" "$budget" <<'PY'
import sys
ips, budget = float(sys.argv[1] or 0), float(sys.argv[2])
n = 2_500 if ips <= 0 else min(50_000, max(1_000, int(ips * budget) // 250 * 250))
print(n)
PY
}

# How far a mode's loss curve may stray from fp32's: the mean loss over the last quarter of the
# logged steps within CURVE_RTOL of fp32's. A first bound, not yet measured on a GPU: the two
# runs start from the same weights and batches, and their losses drift apart only by the
# products' rounding (tf32: 2^-11, bf16: 2^-8 per operand) compounded over the steps.
CURVE_RTOL=0.05

# Compares each mode's steps.csv with fp32's: per logged step the relative loss difference
# (largest and mean), and the last quarter's mean loss, which must be within CURVE_RTOL.
compare_curves() {
    python3 - "$CURVE_RTOL" "$@" <<'PY'
import csv, math, sys
rtol, files = float(sys.argv[1]), sys.argv[2:]
curves = {}
for f in files:
    mode = f.rsplit("-", 1)[1].removesuffix(".csv")
    curves[mode] = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(open(f))]
ref, ok = curves.get("fp32"), True
if not ref:
    print("curves: no fp32 run to compare with")
    sys.exit(1)
tail = lambda c: c[len(c) - max(1, len(c) // 4):]
for mode, c in curves.items():
    if not all(math.isfinite(l) for _, l in c):
        print(f"curves: {mode} has a non-finite loss")
        ok = False
        continue
    if mode == "fp32":
        continue
    pairs = [(a, b) for (sa, a), (sb, b) in zip(c, ref) if sa == sb]
    rel = [abs(a - b) / abs(b) for a, b in pairs]
    mean_mode = sum(l for _, l in tail(c)) / len(tail(c))
    mean_ref = sum(l for _, l in tail(ref)) / len(tail(ref))
    last = abs(mean_mode - mean_ref) / abs(mean_ref)
    print(f"curves: {mode} against fp32 over {len(pairs)} logged steps: loss differs by "
          f"{max(rel):.2%} at most, {sum(rel) / len(rel):.2%} on average; last quarter's mean "
          f"loss {mean_mode:.4f} against {mean_ref:.4f} ({last:.2%}, bound {rtol:.0%})")
    ok &= last <= rtol
sys.exit(0 if ok else 1)
PY
}

synthetic_epoch() {
    local ips n m rc=0 data=/tmp/gpu-check-synth run=/tmp/gpu-check-run
    local precisions=(${TRAIN_PRECISIONS:-fp32 tf32 bf16})
    ips=$(bench_images_per_s)
    # fp32 is the slowest mode: sized for its share of the budget, every mode fits.
    n=$(synthetic_size "${ips:-0}" "$((TRAIN_BUDGET_S / ${#precisions[@]}))")
    if [ -z "$ips" ]; then
        echo "synthetic epoch: $n training images (trainer bench measured no speed)"
    elif [ "$n" -lt 50000 ]; then
        echo "synthetic epoch: $n training images (at ${ips:-?} images/s a 50,000-image epoch" \
            "would take $(python3 -c "print(round(50000 / ${ips:-1}))") s, over the ${TRAIN_BUDGET_S} s budget)"
    else
        echo "synthetic epoch: the full 50,000 training images"
    fi
    rm -rf "$data"
    "$DIR/trainer" synth --dir "$data" --train "$n" --test 2000 || return
    local curves=()
    for m in "${precisions[@]}"; do
        echo "-- synthetic epoch, --precision $m"
        rm -rf "$run"
        "$DIR/trainer" train --data "$data" --dataset synthetic --device "${TRAIN_DEVICE:-cuda}" \
            --preset "${TRAIN_PRESET:-seed}" --precision "$m" --log-every 5 \
            --batch-size 250 --epochs 1 --out "$run" || rc=$?
        cp "$run/metrics.csv" "$OUTDIR/train-metrics-$m.csv" 2>/dev/null
        cp "$run/steps.csv" "$OUTDIR/train-steps-$m.csv" 2>/dev/null &&
            curves+=("$OUTDIR/train-steps-$m.csv")
    done
    compare_curves "${curves[@]}" || rc=1
    return $rc
}

# The growth a long run's memory may show from epoch 2 to epoch 20, for the device's used memory
# and the resident set alike: 5%, as the CPU's test in trainer/tests/train.rs allows.
MEMORY_GROWTH=0.05

# Step 7: 20 epochs of 4 steps of the small network; the used memory of the device and the
# resident set, as metrics.csv reports them after each epoch, must not grow by more than
# MEMORY_GROWTH from epoch 2 to epoch 20. Then `trainer bench` at a batch whose first
# convolution alone needs 210 GB (the seed network, 400,000 images: 400,000 x 128 x 32 x 32
# floats) must fail cleanly at that allocation with the error naming the batch size.
memory_check() {
    local run=/tmp/gpu-check-memory device=${TRAIN_DEVICE:-cuda} rc=0 columns=rss_mib
    [ "$device" = cpu ] || columns="rss_mib gpu_mib"
    rm -rf "$run"
    "$DIR/trainer" train --device "$device" --preset "${MEMORY_PRESET:-small}" --synth-train 1000 \
        --synth-test 250 --batch-size 250 --epochs 20 --patience 0 --out "$run" 2>&1 | tail -3
    cp "$run/metrics.csv" "$OUTDIR/memory-metrics.csv" || return 1
    python3 - "$run/metrics.csv" "$MEMORY_GROWTH" $columns <<'PY' || rc=1
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
limit, ok = float(sys.argv[2]), True
for col in sys.argv[3:]:
    values = [float(r[col]) for r in rows if r.get(col)]
    if len(values) != 20:
        print(f"memory: {col} has {len(values)} values, expected 20")
        ok = False
        continue
    growth = values[19] / values[1] - 1
    print(f"memory: {col} epoch 2 {values[1]:.1f} MiB, epoch 20 {values[19]:.1f} MiB "
          f"({growth:+.1%}); every epoch: {' '.join(f'{v:.0f}' for v in values)}")
    ok &= abs(values[19] - values[1]) <= limit * values[1]
sys.exit(0 if ok else 1)
PY
    # The CPU would try to allocate the 210 GB (and abort): the refusal is the GPU's.
    [ "$device" = cpu ] && return $rc
    local o=0 want='out of GPU memory: a training step at --batch-size 400000 needs more than the'
    "$DIR/trainer" bench --device "$device" --preset seed --batch-size 400000 --steps 1 \
        >"$OUTDIR/memory-oom.txt" 2>&1 || o=$?
    tail -5 "$OUTDIR/memory-oom.txt"
    if [ "$o" = 1 ] && grep -q "$want" "$OUTDIR/memory-oom.txt"; then
        echo "memory: a batch too large for the GPU is refused naming it"
    else
        echo "memory: the oversized batch did not end in the out-of-memory error (exit $o)"
        rc=1
    fi
    return $rc
}

PARTS=(gpu smoke parity bench torch epoch memory criterion)

run() {
    local key
    local parts=${GPU_CHECK_PARTS:-}
    for key in ${parts//,/ }; do
        if [[ " ${PARTS[*]} " != *" $key "* ]]; then
            echo "GPU_CHECK_PARTS: unknown part '$key' (the parts: ${PARTS[*]})" >&2
            return 2
        fi
    done
    OUTDIR=${OUT:-$DIR/out}
    mkdir -p "$OUTDIR"
    exec > >(tee -a "$OUTDIR/gpu-check.log") 2>&1
    DEADLINE=$(($(date +%s) + ${GPU_CHECK_BUDGET_S:-470}))
    export OUTDIR TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-90} PYTHONUNBUFFERED=1
    # libcuda comes with the driver; NVRTC and cuBLAS with the CUDA 13.0 toolkit, or else with
    # PyTorch's nvidia-* wheels.
    # PyTorch's wheels first, so that the toolkit's own folders (prepended last) come first on the
    # path: the driver (CUDA 13.0) rejects PTX from a newer NVRTC.
    for d in $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cu13", "lib") for p in nvidia.__path__))' 2>/dev/null) \
        /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64 /usr/local/cuda-13.0/lib64; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
    echo "gpu-check: $(date -u), LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

    want gpu && part "GPU" 20 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
        nvcc --version | tail -2; ls -l /usr/local/cuda/lib64/libnvrtc.so* 2>&1 | head -3' 
    want smoke && part "PyTorch smoke (CPU, batch 2)" 60 \
        python3 scripts/torch_seed.py --device cpu --batch-size 2 --steps 1 --warmup 0
    want parity && part "parity suite on the GPU (gpu_*)" 120 \
        "$DIR/kernels-tests" --ignored gpu_ --test-threads=1
    want bench && part "trainer bench --device cuda (seed, batch 250, fp32 tf32 bf16)" 150 \
        bash scripts/gpu-check.sh bench-modes
    want torch && part "PyTorch seed network (cuda, batch 250, TF32 off and on, AMP bf16)" 130 \
        python3 scripts/torch_seed.py --device cuda --batch-size 250 --out "$OUTDIR/torch_seed.txt"
    want epoch && part "synthetic epoch per precision (trainer train --device cuda --epochs 1)" $((TRAIN_BUDGET_S + 90)) \
        bash scripts/gpu-check.sh synthetic-epoch
    want memory && part "memory over 20 epochs, and a batch too large for the GPU" 100 \
        bash scripts/gpu-check.sh memory
    # CUDA_BENCH_FILTER: a criterion filter (a regular expression on the benchmark ids).
    want criterion && part "CUDA criterion benches" 150 \
        bash -c "set -o pipefail; '$DIR/cuda-bench' --bench ${CUDA_BENCH_FILTER:-} 2>&1 | tee '$OUTDIR/cuda-bench.txt' | grep -E '^cuda|time:|thrpt:|skipped'"
    {
        echo "== gpu-check summary"
        printf '%s\n' "${RESULTS[@]}"
        echo "-- for BENCHMARKS.md"
        grep -h '^training:\|^inference:\|^bench:' "$OUTDIR"/bench-*.txt 2>/dev/null
        grep -h '^RESULT\|^|' "$OUTDIR/torch_seed.txt" 2>/dev/null
        grep -h '^epoch 1/' "$OUTDIR/gpu-check.log" 2>/dev/null | tail -3
        grep -h '^curves:' "$OUTDIR/gpu-check.log" 2>/dev/null
        grep -h '^memory:' "$OUTDIR/gpu-check.log" 2>/dev/null
    } | tee "$OUTDIR/summary.txt"
    # Non-zero when any part failed, ran out of time or was skipped.
    local r failed=0
    for r in "${RESULTS[@]}"; do
        [[ $r == *": exit 0 "* ]] || failed=1
    done
    return $failed
}

case "${1:-}" in
build) build ;;
run) run ;;
# Step 6 of `run`, a command of its own so that `timeout` can stop it.
synthetic-epoch) synthetic_epoch ;;
# Step 4 of `run`.
bench-modes) bench_modes ;;
# Step 7 of `run`.
memory) memory_check ;;
*)
    echo "usage: scripts/gpu-check.sh build|run" >&2
    exit 2
    ;;
esac

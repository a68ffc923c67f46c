#!/usr/bin/env bash
# The one prepared script for a lent GPU. Two halves:
#
#   scripts/gpu-check.sh build   here (no GPU needed): builds the kernels crate's test binary,
#                                strips it and puts it in target/gpu-check/ (a few MiB).
#   scripts/gpu-check.sh run     on the device machine, which has CUDA 13.0 and no Rust: runs the
#                                CPU-versus-CUDA parity suite on GPU 0 (the `gpu_*` tests, ignored
#                                elsewhere; each compiles its modules with NVRTC for the card's
#                                own architecture), then the same suite on the emulator for
#                                comparison, then the CUDA benchmarks (benches/benches/cuda.rs).
#                                Logs go to $OUT when it is set.
#
# Device call: run(command="scripts/gpu-check.sh run", carry=["target/gpu-check"], timeout_s=300).
# The synthetic training run and the PyTorch comparison join this script
# when the trainer runs on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=target/gpu-check

case "${1:-}" in
build)
    mkdir -p "$DIR"
    bin=$(cargo test -p kernels --lib --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernels":
        print(m["executable"])' | tail -1)
    cp "$bin" "$DIR/kernels-tests"
    strip "$DIR/kernels-tests"
    bench=$(cargo bench -p benches --bench cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])' | tail -1)
    cp "$bench" "$DIR/cuda-bench"
    strip "$DIR/cuda-bench"
    ls -l "$DIR"
    ;;
run)
    LOG=${OUT:-$DIR}/gpu-check.log
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$LOG"
    # The driver's libcuda is on the loader path; NVRTC comes with the CUDA 13.0 toolkit.
    for d in /usr/local/cuda/lib64 /usr/local/cuda-13.0/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
    echo "== parity suite on the GPU" | tee -a "$LOG"
    status=0
    "$DIR/kernels-tests" --ignored gpu_ --test-threads=1 2>&1 | tee -a "$LOG" || status=1
    echo "== the same suite on the emulator" | tee -a "$LOG"
    "$DIR/kernels-tests" emu_ 2>&1 | tail -3 | tee -a "$LOG" || status=1
    echo "== CUDA benchmarks (criterion; cuBLAS SGEMM as the yardstick)" | tee -a "$LOG"
    "$DIR/cuda-bench" --bench 2>&1 | grep -E "^cuda|time:|thrpt:|skipped" | tee -a "$LOG" || status=1
    exit $status
    ;;
*)
    echo "usage: scripts/gpu-check.sh build|run" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Compile check of every CUDA kernel, without a GPU: NVRTC 13.0 (from PyPI, into the git-ignored
# .venv-cuda/) compiles each module in kernels/src/modules.rs (a unit test keeps that list
# equal to the .cu files on disk) for sm_80 and sm_90 exactly as the GPU backend does at run time,
# then `ptxas -v` assembles each PTX and the register / shared-memory / spill report is written to
# kernels/cuda-resources.txt (committed: refresh it when kernels change). Any error fails, and so
# does a kernel that spills registers.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-cuda
ARCHS=(sm_80 sm_90)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CU="$SITE/nvidia/cu13"
if [ ! -e "$CU/lib/libnvrtc.so.13" ] || [ ! -x "$CU/bin/ptxas" ]; then
    "$VENV/bin/pip" install --quiet "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-nvcc==13.0.*"
fi

PTX_DIR=target/cuda-ptx
rm -rf "$PTX_DIR"
# The test profile (target/debug too): `cargo test` then reuses the kernels crate, its
# dependencies and the emulator's C++ instead of building them a second time.
cargo build --quiet --profile test -p kernels --example cuda_compile_check
# One NVRTC process per architecture, side by side (one compiles for about 50 s on one core).
pids=()
for arch in "${ARCHS[@]}"; do
    LD_LIBRARY_PATH="$CU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        target/debug/examples/cuda_compile_check "$PTX_DIR" "$arch" &
    pids+=($!)
done
nvrtc_failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || nvrtc_failed=1
done
[ "$nvrtc_failed" = 0 ] || { echo "cuda-compile-check: NVRTC failed (above)" >&2; exit 1; }

REPORT=kernels/cuda-resources.txt
LOG="$PTX_DIR/ptxas.log"
# One ptxas per PTX file, as many at a time as there are CPUs, each into its own log; the logs
# are joined in file order so the report does not depend on which finished first.
export CU
# shellcheck disable=SC2016
printf '%s\0' "$PTX_DIR"/*.ptx | xargs -0 -n1 -P "$(nproc)" bash -c '
    ptx=$1 arch=${1%.ptx}
    arch=${arch##*.}
    { echo "## $(basename "$ptx")"; "$CU/bin/ptxas" -v -arch="$arch" "$ptx" -o /dev/null 2>&1; } > "$ptx.log" ||
        { cat "$ptx.log" >&2; exit 255; }' _
: > "$LOG"
for ptx in "$PTX_DIR"/*.ptx; do
    cat "$ptx.log" >> "$LOG"
done

"$VENV/bin/python" - "$LOG" "$REPORT" <<'PY'
import re, sys
log, report = sys.argv[1], sys.argv[2]
rows, cur = [], None
for line in open(log):
    m = re.search(r"Compiling entry function '(\w+)' for '(\w+)'", line)
    if m:
        cur = {"kernel": m[1], "arch": m[2], "regs": 0, "smem": 0, "stack": 0, "spill_st": 0, "spill_ld": 0}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
    m = re.search(r"Used (\d+) registers", line)
    if m:
        cur["regs"] = int(m[1])
    m = re.search(r"(\d+) bytes smem", line)
    if m:
        cur["smem"] = int(m[1])
rows.sort(key=lambda r: (r["arch"], r["kernel"]))
with open(report, "w") as f:
    f.write("# ptxas -v of every kernel (NVRTC 13.0 PTX), written by scripts/cuda-compile-check.sh.\n")
    f.write("# smem is static shared memory; dynamic shared memory is set per launch.\n")
    f.write(f"{'arch':<6} {'kernel':<32} {'regs':>5} {'smem':>6} {'stack':>6} {'spill_st':>9} {'spill_ld':>9}\n")
    for r in rows:
        f.write(f"{r['arch']:<6} {r['kernel']:<32} {r['regs']:>5} {r['smem']:>6} {r['stack']:>6} {r['spill_st']:>9} {r['spill_ld']:>9}\n")
print(f"ptxas: {len(rows)} kernel builds, report in {report}")
spills = [f"{r['arch']} {r['kernel']}" for r in rows if r["spill_st"] or r["spill_ld"]]
if spills:
    print("ptxas: register spills (every kernel is kept free of them):", ", ".join(spills))
    sys.exit(1)
PY

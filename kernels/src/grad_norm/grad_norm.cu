// The global-norm reduction and clipping, the CUDA twin of cpu.rs: sum(x^2) accumulated in
// double (block partials, then one block adds them in block order) into one slot of a buffer of
// sums, and x *= s.
#include "common.cuh"

struct SumSquaresParams {
    double* partial;  // one per block
    const float* x;
    uint32_t n;
};

// x: (n) -> partial: (gridDim.x), each block's sum of squares.
extern "C" __global__ void sum_of_squares_partial(SumSquaresParams p) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        const double v = p.x[i];
        acc += v * v;
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) p.partial[blockIdx.x] = acc;
}
EMU_KERNEL(sum_of_squares_partial, SumSquaresParams)

struct SumPartialsParams {
    double* sums;  // one value per tensor; this launch writes sums[slot]
    const double* partial;
    uint32_t n;
    uint32_t slot;
};

// partial: (n) -> sums[slot]; one block. Writing into a slot lets the sums of many tensors
// gather in one buffer that the host reads once.
extern "C" __global__ void sum_partials(SumPartialsParams p) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (uint32_t i = threadIdx.x; i < p.n; i += blockDim.x) acc += p.partial[i];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) p.sums[p.slot] = acc;
}
EMU_KERNEL(sum_partials, SumPartialsParams)

struct ScaleParams {
    float* x;
    float s;
    uint32_t n;
};

// x: (n), scaled in place.
extern "C" __global__ void scale_in_place(ScaleParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) p.x[i] *= p.s;
}
EMU_KERNEL(scale_in_place, ScaleParams)

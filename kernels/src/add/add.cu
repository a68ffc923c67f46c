// Elementwise sums, the CUDA twin of cpu.rs: y = a + b and acc += b.
#include "common.cuh"

struct AddParams {
    float* y;
    const float* a;
    const float* b;
    uint32_t n;
};

// a, b: (n) -> y: (n), overwritten.
extern "C" __global__ void add(AddParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) p.y[i] = p.a[i] + p.b[i];
}
EMU_KERNEL(add, AddParams)

struct AddAssignParams {
    float* acc;
    const float* b;
    uint32_t n;
};

// acc, b: (n); acc accumulated into.
extern "C" __global__ void add_assign(AddAssignParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) p.acc[i] += p.b[i];
}
EMU_KERNEL(add_assign, AddAssignParams)

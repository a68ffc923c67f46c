// Kernels that test the test harness itself, not ops: each is wrong on purpose or exists only to
// show that the emulator's barrier is real. Only the emulated tests launch them.
#include "common.cuh"

struct HarnessParams {
    float* y;
    const float* x;
    uint32_t n;
};

// ReLU with an off-by-one read (x[i + 1]): the parity check must report it.
extern "C" __global__ void broken_relu_forward(HarnessParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        const float v = p.x[i + 1 < p.n ? i + 1 : i];
        p.y[i] = v > 0.0f ? v : 0.0f;
    }
}
EMU_KERNEL(broken_relu_forward, HarnessParams)

// Reverses each block's slice of x through shared memory; n is a multiple of blockDim.x.
extern "C" __global__ void reverse_in_block(HarnessParams p) {
    CUDA_DYNAMIC_SHARED(float, s);
    const uint32_t t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = p.x[base + t];
    __syncthreads();
    p.y[base + t] = s[blockDim.x - 1 - t];
}
EMU_KERNEL(reverse_in_block, HarnessParams)

// The same without the barrier: a thread may read a slot its partner has not written yet.
extern "C" __global__ void reverse_in_block_no_barrier(HarnessParams p) {
    CUDA_DYNAMIC_SHARED(float, s);
    const uint32_t t = threadIdx.x, base = blockIdx.x * blockDim.x;
    s[t] = p.x[base + t];
    p.y[base + t] = s[blockDim.x - 1 - t];
}
EMU_KERNEL(reverse_in_block_no_barrier, HarnessParams)

// Each warp's sum by shuffles, written by lane 0 to y[warp]; n is a multiple of 32.
extern "C" __global__ void warp_sums(HarnessParams p) {
    const uint32_t i = global_thread();
    const float total = warp_sum(p.x[i]);
    if (threadIdx.x % 32 == 0) p.y[i / 32] = total;
}
EMU_KERNEL(warp_sums, HarnessParams)

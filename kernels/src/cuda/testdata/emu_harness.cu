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

// ---- Tensor cores (mma.cuh): fragment layouts, ldmatrix and cp.async, against hand-written
// expectations in kernels/src/cuda/tests/tensor_cores.rs. These need sm_80 (mma.cuh). ----
#include "mma.cuh"

struct MmaHarnessParams {
    float* d;        // (16, 8), row-major
    const float* a;  // (16, K), K = 8 (TF32) or 16 (BF16; values exact in BF16)
    const float* b;  // (K, 8)
    const float* c;  // (16, 8)
};

// This lane's c/d fragment of a (16, 8) row-major matrix: rows g, g + 8, columns 2t, 2t + 1.
__device__ __forceinline__ uint32_t mma_harness_cd(uint32_t i) {
    const uint32_t lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    return (g + 8 * (i / 2)) * 8 + 2 * t + (i & 1);
}

// One m16n8k8 TF32 mma by one warp, every fragment gathered from global memory as the PTX ISA
// lays it out: a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); b0 (t, g), b1 (t + 4, g).
extern "C" __global__ void mma_tf32_fragments(MmaHarnessParams p) {
    const uint32_t lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const uint32_t a[4] = {tf32_bits(p.a[g * 8 + t]), tf32_bits(p.a[(g + 8) * 8 + t]), tf32_bits(p.a[g * 8 + t + 4]),
                           tf32_bits(p.a[(g + 8) * 8 + t + 4])};
    const uint32_t b[2] = {tf32_bits(p.b[t * 8 + g]), tf32_bits(p.b[(t + 4) * 8 + g])};
    float d[4];
    for (uint32_t i = 0; i < 4; ++i) d[i] = p.c[mma_harness_cd(i)];
    mma_tf32(d, a, b);
    for (uint32_t i = 0; i < 4; ++i) p.d[mma_harness_cd(i)] = d[i];
}
EMU_KERNEL(mma_tf32_fragments, MmaHarnessParams)

// The same with b's fragment transposed (b0 (g, t), b1 (g, t + 4)): it computes a b^T, and the
// harness must report it.
extern "C" __global__ void mma_tf32_fragments_transposed(MmaHarnessParams p) {
    const uint32_t lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const uint32_t a[4] = {tf32_bits(p.a[g * 8 + t]), tf32_bits(p.a[(g + 8) * 8 + t]), tf32_bits(p.a[g * 8 + t + 4]),
                           tf32_bits(p.a[(g + 8) * 8 + t + 4])};
    const uint32_t b[2] = {tf32_bits(p.b[g * 8 + t]), tf32_bits(p.b[g * 8 + t + 4])};
    float d[4];
    for (uint32_t i = 0; i < 4; ++i) d[i] = p.c[mma_harness_cd(i)];
    mma_tf32(d, a, b);
    for (uint32_t i = 0; i < 4; ++i) p.d[mma_harness_cd(i)] = d[i];
}
EMU_KERNEL(mma_tf32_fragments_transposed, MmaHarnessParams)

// One m16n8k16 BF16 mma: registers of BF16 pairs (lower index in the low half): a (g, 2t + i),
// (g + 8, 2t + i), (g, 2t + 8 + i), (g + 8, 2t + 8 + i); b (2t + i, g), (2t + 8 + i, g).
extern "C" __global__ void mma_bf16_fragments(MmaHarnessParams p) {
    const uint32_t lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    uint32_t a[4], b[2];
    for (uint32_t r = 0; r < 4; ++r) {
        const uint32_t row = g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
        a[r] = bf16_pair(p.a[row * 16 + col], p.a[row * 16 + col + 1]);
    }
    for (uint32_t r = 0; r < 2; ++r) b[r] = bf16_pair(p.b[(2 * t + 8 * r) * 8 + g], p.b[(2 * t + 8 * r + 1) * 8 + g]);
    float d[4];
    for (uint32_t i = 0; i < 4; ++i) d[i] = p.c[mma_harness_cd(i)];
    mma_bf16(d, a, b);
    for (uint32_t i = 0; i < 4; ++i) p.d[mma_harness_cd(i)] = d[i];
}
EMU_KERNEL(mma_bf16_fragments, MmaHarnessParams)

struct LdmatrixHarnessParams {
    uint32_t* out;       // (32 lanes, 14 registers): x1, x2, x4, then the same .trans
    const uint16_t* x;   // 4 matrices of 8 x 8 16-bit values, row-major, matrix after matrix
};

// Four 8 x 8 matrices into shared memory, their rows scattered (lane l's row, row l % 8 of
// matrix l / 8, at slot (7 l + 3) % 32 of 16 bytes) so that only the row addresses tie them
// together; then each lane's registers of ldmatrix x1, x2, x4 and their .trans forms. One warp.
extern "C" __global__ void ldmatrix_fragments(LdmatrixHarnessParams p) {
    __shared__ __align__(16) uint16_t rows[32][8];
    const uint32_t lane = threadIdx.x % 32, matrix = lane / 8, row = lane % 8;
    uint16_t* mine = rows[(7 * lane + 3) % 32];
    for (uint32_t e = 0; e < 8; ++e) mine[e] = p.x[(matrix * 8 + row) * 8 + e];
    __syncwarp();
    uint32_t r1[1], r2[2], r4[4], t1[1], t2[2], t4[4];
    ldmatrix_x1(r1, mine);
    ldmatrix_x2(r2, mine);
    ldmatrix_x4(r4, mine);
    ldmatrix_x1_trans(t1, mine);
    ldmatrix_x2_trans(t2, mine);
    ldmatrix_x4_trans(t4, mine);
    const uint32_t regs[14] = {r1[0], r2[0], r2[1], r4[0], r4[1], r4[2], r4[3],
                               t1[0], t2[0], t2[1], t4[0], t4[1], t4[2], t4[3]};
    for (uint32_t i = 0; i < 14; ++i) p.out[lane * 14 + i] = regs[i];
}
EMU_KERNEL(ldmatrix_fragments, LdmatrixHarnessParams)

// Reverses each block's slice of x through shared memory filled by cp.async (4 bytes a thread),
// waiting for the copies before the barrier; n is a multiple of blockDim.x.
extern "C" __global__ void cp_async_reverse(HarnessParams p) {
    CUDA_DYNAMIC_SHARED(float, s);
    const uint32_t t = threadIdx.x, base = blockIdx.x * blockDim.x;
    cp_async_4(&s[t], &p.x[base + t], 4);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    p.y[base + t] = s[blockDim.x - 1 - t];
}
EMU_KERNEL(cp_async_reverse, HarnessParams)

// The same without the wait: the barrier does not wait for asynchronous copies, so a thread may
// read a slot whose copy has not landed (on the emulator: never has).
extern "C" __global__ void cp_async_reverse_no_wait(HarnessParams p) {
    CUDA_DYNAMIC_SHARED(float, s);
    const uint32_t t = threadIdx.x, base = blockIdx.x * blockDim.x;
    cp_async_4(&s[t], &p.x[base + t], 4);
    cp_async_commit();
    __syncthreads();
    p.y[base + t] = s[blockDim.x - 1 - t];
}
EMU_KERNEL(cp_async_reverse_no_wait, HarnessParams)

// Two groups a thread (x[t] to slot t, then x[n/2 + t] to slot n/2 + t, n = 2 blockDim.x, one
// block), cp_async_wait<1>, and both slots read back by the thread that copied them: the first
// group has landed, the second may not have (on the emulator: has not, and reads its poison).
extern "C" __global__ void cp_async_groups(HarnessParams p) {
    CUDA_DYNAMIC_SHARED(float, s);
    const uint32_t t = threadIdx.x, half = blockDim.x;
    cp_async_4(&s[t], &p.x[t], 4);
    cp_async_commit();
    cp_async_4(&s[half + t], &p.x[half + t], 4);
    cp_async_commit();
    cp_async_wait<1>();
    p.y[t] = s[t];
    p.y[half + t] = s[half + t];
    cp_async_wait<0>();
}
EMU_KERNEL(cp_async_groups, HarnessParams)

// Zero fill: thread t copies 16 bytes to its 16-byte slot from x[4 t ..], of which only the first
// 4 (t % 5) bytes come from x; y gets the slot (4 floats a thread, one block).
extern "C" __global__ void cp_async_zero_fill(HarnessParams p) {
    CUDA_DYNAMIC_SHARED(float4, slots);  // (a name of its own: float4, not float)
    const uint32_t t = threadIdx.x;
    cp_async_16(&slots[t], &p.x[4 * t], 4 * (t % 5));
    cp_async_commit();
    cp_async_wait<0>();
    const float* mine = reinterpret_cast<const float*>(&slots[t]);
    for (uint32_t i = 0; i < 4; ++i) p.y[4 * t + i] = mine[i];
}
EMU_KERNEL(cp_async_zero_fill, HarnessParams)

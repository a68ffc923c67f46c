// DropBlock, the CUDA twin of cpu.rs: the mask (the same Philox draws, so the very same mask),
// its rescale factor, and its application.
#include "common.cuh"
#include "philox.cuh"

struct DropBlockMaskParams {
    unsigned char* mask;  // 1 kept, 0 dropped
    uint32_t* kept;       // kept values per plane
    MaskKey key;
    float gamma;
    uint32_t planes, h, w, block;
};

// -> mask: (planes, h, w), kept: (planes). Needs h >= block and w >= block, and
// (h - block + 1) * (w - block + 1) bytes of dynamic shared memory.
//
// One block per plane (grid-stride over planes), of any multiple of 32 threads up to 1024. First
// every centre of the plane's (h-block+1) x (w-block+1) sampling grid is drawn once, into shared
// memory; then each cell of the plane is dropped iff a drawn centre lies in the block x block square above and to its left
// (a centre at (i, j) drops rows i..i+block-1 and columns j..j+block-1, as on the CPU), and the
// plane's mask is written in coalesced rows. Kept cells are counted by the block: an integer
// sum, exact in any order.
extern "C" __global__ void dropblock_mask(DropBlockMaskParams p) {
    CUDA_DYNAMIC_SHARED(unsigned char, centre);
    __shared__ uint32_t scratch[32];
    const uint32_t gh = p.h - p.block + 1, gw = p.w - p.block + 1, cells = p.h * p.w;
    for (uint32_t plane = blockIdx.x; plane < p.planes; plane += gridDim.x) {
        const uint64_t first = (uint64_t)plane * gh * gw;
        for (uint32_t e = threadIdx.x; e < gh * gw; e += blockDim.x) {
            centre[e] = mask_uniform(p.key, first + e) < p.gamma;
        }
        __syncthreads();
        unsigned char* m = p.mask + (uint64_t)plane * cells;
        uint32_t kept = 0;
        for (uint32_t j = threadIdx.x; j < cells; j += blockDim.x) {
            const int r = (int)(j / p.w), c = (int)(j % p.w), b = (int)p.block;
            const int i0 = max(r - b + 1, 0), i1 = min(r, (int)gh - 1);
            const int j0 = max(c - b + 1, 0), j1 = min(c, (int)gw - 1);
            unsigned char dropped = 0;
            for (int i = i0; i <= i1; ++i) {
                for (int jj = j0; jj <= j1; ++jj) dropped |= centre[i * gw + jj];
            }
            m[j] = 1 - dropped;
            kept += 1 - dropped;
        }
        kept = block_sum(kept, scratch);
        if (threadIdx.x == 0) p.kept[plane] = kept;
        __syncthreads();  // every thread is done with centre (and warp 0 with scratch)
    }
}
EMU_KERNEL(dropblock_mask, DropBlockMaskParams)

struct DropBlockScaleParams {
    float* scale;          // one value
    const uint32_t* kept;  // kept values per plane
    uint32_t planes, n;    // n: values of the whole map
};

// kept: (planes) -> scale = n / sum(kept) in double, rounded to float, or 0 when nothing is
// kept: what the CPU computes. One block; the sum is an integer, exact in any order.
extern "C" __global__ void dropblock_scale(DropBlockScaleParams p) {
    __shared__ uint64_t scratch[32];
    uint64_t kept = 0;
    for (uint32_t i = threadIdx.x; i < p.planes; i += blockDim.x) kept += p.kept[i];
    kept = block_sum(kept, scratch);
    if (threadIdx.x == 0) *p.scale = kept == 0 ? 0.0f : (float)((double)p.n / (double)kept);
}
EMU_KERNEL(dropblock_scale, DropBlockScaleParams)

struct DropBlockApplyParams {
    float* out;
    const float* inp;
    const unsigned char* mask;
    const float* scale;  // one value, dropblock_scale's
    uint32_t n;
};

// inp, mask: (n) -> out = inp * scale where mask is 1, else 0; overwritten.
extern "C" __global__ void dropblock_apply(DropBlockApplyParams p) {
    const float scale = *p.scale;
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        p.out[i] = p.mask[i] == 1 ? p.inp[i] * scale : 0.0f;
    }
}
EMU_KERNEL(dropblock_apply, DropBlockApplyParams)

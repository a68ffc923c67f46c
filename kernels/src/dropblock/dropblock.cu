// DropBlock, the CUDA twin of cpu.rs: the mask drawn one (h, w) plane per thread (a plain port,
// the same Philox draws, so the very same mask), and its application.
#include "common.cuh"
#include "philox.cuh"

struct DropBlockMaskParams {
    unsigned char* mask;  // 1 kept, 0 dropped
    uint32_t* kept;       // kept values per plane
    MaskKey key;
    float gamma;
    uint32_t planes, h, w, block;
};

// -> mask: (planes, h, w), kept: (planes). Needs h >= block and w >= block.
extern "C" __global__ void dropblock_mask(DropBlockMaskParams p) {
    const uint32_t gh = p.h - p.block + 1, gw = p.w - p.block + 1;
    for (uint32_t plane = global_thread(); plane < p.planes; plane += grid_threads()) {
        unsigned char* m = p.mask + (uint64_t)plane * p.h * p.w;
        const uint64_t first = (uint64_t)plane * gh * gw;
        for (uint32_t j = 0; j < p.h * p.w; ++j) m[j] = 1;
        for (uint32_t i = 0; i < gh; ++i) {
            for (uint32_t j = 0; j < gw; ++j) {
                if (mask_uniform(p.key, first + i * gw + j) < p.gamma) {
                    for (uint32_t r = i; r < i + p.block; ++r) {
                        for (uint32_t c = j; c < j + p.block; ++c) m[r * p.w + c] = 0;
                    }
                }
            }
        }
        uint32_t kept = 0;
        for (uint32_t j = 0; j < p.h * p.w; ++j) kept += m[j];
        p.kept[plane] = kept;
    }
}
EMU_KERNEL(dropblock_mask, DropBlockMaskParams)

struct DropBlockApplyParams {
    float* out;
    const float* inp;
    const unsigned char* mask;
    float scale;
    uint32_t n;
};

// inp, mask: (n) -> out = inp * scale where mask is 1, else 0; overwritten.
extern "C" __global__ void dropblock_apply(DropBlockApplyParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        p.out[i] = p.mask[i] == 1 ? p.inp[i] * p.scale : 0.0f;
    }
}
EMU_KERNEL(dropblock_apply, DropBlockApplyParams)

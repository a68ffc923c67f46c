// Inverted dropout, the CUDA twin of cpu.rs: out[i] = inp[i] / keep if uniform(i) < keep, else 0.
// Forward (inp = x) and backward (inp = dy) are this same map with the same key.
#include "common.cuh"
#include "philox.cuh"

struct DropoutParams {
    float* out;
    const float* inp;
    MaskKey key;
    float keep;
    uint32_t n;
};

// inp: (n) -> out: (n), overwritten.
extern "C" __global__ void dropout_apply(DropoutParams p) {
    const float scale = 1.0f / p.keep;
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        p.out[i] = mask_uniform(p.key, i) < p.keep ? p.inp[i] * scale : 0.0f;
    }
}
EMU_KERNEL(dropout_apply, DropoutParams)

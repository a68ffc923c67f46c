// Adam, the CUDA twin of cpu.rs: every value independent, with the bias-corrected step lr_t.
#include "common.cuh"

struct AdamParams {
    float* w;
    float* m;
    float* v;
    const float* g;
    float beta1, beta2, epsilon, lr_t;
    uint32_t n;
};

// w, m, v, g: (n); w, m and v updated in place.
extern "C" __global__ void adam_update(AdamParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        const float g = p.g[i];
        const float m = p.beta1 * p.m[i] + (1.0f - p.beta1) * g;
        const float v = p.beta2 * p.v[i] + (1.0f - p.beta2) * g * g;
        p.m[i] = m;
        p.v[i] = v;
        p.w[i] -= p.lr_t * m / (sqrtf(v) + p.epsilon);
    }
}
EMU_KERNEL(adam_update, AdamParams)

// SGD with momentum, Nesterov and weight decay, the CUDA twin of cpu.rs: every value independent.
#include "common.cuh"

struct SgdParams {
    float* w;
    float* buf;
    const float* g;
    float lr, momentum, weight_decay;
    uint32_t nesterov;
    uint32_t n;
};

// w, buf, g: (n); w and buf updated in place.
extern "C" __global__ void sgd_update(SgdParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        const float w = p.w[i];
        const float d = p.g[i] + p.weight_decay * w;
        const float b = p.momentum * p.buf[i] + d;
        const float step = p.nesterov ? d + p.momentum * b : b;
        p.buf[i] = b;
        p.w[i] = w - p.lr * step;
    }
}
EMU_KERNEL(sgd_update, SgdParams)

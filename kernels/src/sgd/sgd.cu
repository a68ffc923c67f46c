// SGD with momentum, Nesterov and weight decay, the CUDA twin of cpu.rs: every value independent.
// Each multiply and add is rounded on its own (__fmul_rn, __fadd_rn, which the compiler never
// contracts into a fused multiply-add), as on the CPU: the update is bit-identical to cpu.rs, and
// an exact parity test can catch any change of formula. (The first H100 run showed what
// contraction does here: after 3 steps a weight of -0.0151 differed in its 5th digit, because
// w - lr * step cancels.)
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
        const float d = __fadd_rn(p.g[i], __fmul_rn(p.weight_decay, w));
        const float b = __fadd_rn(__fmul_rn(p.momentum, p.buf[i]), d);
        const float step = p.nesterov ? __fadd_rn(d, __fmul_rn(p.momentum, b)) : b;
        p.buf[i] = b;
        p.w[i] = __fsub_rn(w, __fmul_rn(p.lr, step));
    }
}
EMU_KERNEL(sgd_update, SgdParams)

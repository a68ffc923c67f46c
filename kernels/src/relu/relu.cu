// ReLU, the CUDA twin of cpu.rs: y = max(x, 0) (NaN stays NaN); dx = dy where x > 0, else 0.
#include "common.cuh"

struct ReluForwardParams {
    float* y;
    const float* x;
    uint32_t n;
};

// x: (n) -> y: (n), overwritten.
extern "C" __global__ void relu_forward(ReluForwardParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        const float v = p.x[i];
        p.y[i] = (v > 0.0f || v != v) ? v : 0.0f;  // NaN propagates, as in cpu.rs
    }
}
EMU_KERNEL(relu_forward, ReluForwardParams)

struct ReluBackwardParams {
    float* dx;
    const float* dy;
    const float* x;
    uint32_t n;
};

// dy, x: (n) -> dx: (n), overwritten.
extern "C" __global__ void relu_backward(ReluBackwardParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        p.dx[i] = p.x[i] > 0.0f ? p.dy[i] : 0.0f;
    }
}
EMU_KERNEL(relu_backward, ReluBackwardParams)

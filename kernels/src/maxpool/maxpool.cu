// Max-pooling with TensorFlow SAME padding, the CUDA twin of cpu.rs. Forward: one thread per
// output value; backward: one thread per (n, c) plane, adding in output order as the CPU does.
#include "common.cuh"

struct MaxPoolParams {
    float* y;          // forward output; backward: dx
    uint32_t* argmax;  // index into each (h, w) plane
    const float* x;    // forward input; backward: dy
    uint32_t planes, h, w, oh, ow, kh, kw, sh, sw, pad_top, pad_left;
};

// x: (planes, h, w) -> y, argmax: (planes, oh, ow).
extern "C" __global__ void maxpool_forward(MaxPoolParams p) {
    const uint32_t n = p.planes * p.oh * p.ow;
    for (uint32_t i = global_thread(); i < n; i += grid_threads()) {
        const uint32_t ox = i % p.ow, oy = (i / p.ow) % p.oh, plane = i / (p.ow * p.oh);
        const int r_start = (int)(oy * p.sh) - (int)p.pad_top, c_start = (int)(ox * p.sw) - (int)p.pad_left;
        const int r0 = max(r_start, 0), r1 = min(r_start + (int)p.kh, (int)p.h);
        const int c0 = max(c_start, 0), c1 = min(c_start + (int)p.kw, (int)p.w);
        const float* x = p.x + (uint64_t)plane * p.h * p.w;
        uint32_t best_i = r0 * p.w + c0;
        float best = x[best_i];
        for (int r = r0; r < r1; ++r) {
            for (int c = c0; c < c1; ++c) {
                const float v = x[r * p.w + c];
                if (v > best) {
                    best = v;
                    best_i = r * p.w + c;
                }
            }
        }
        p.y[i] = best;
        p.argmax[i] = best_i;
    }
}
EMU_KERNEL(maxpool_forward, MaxPoolParams)

// dy (in x), argmax: (planes, oh, ow) -> dx (in y): (planes, h, w), overwritten.
extern "C" __global__ void maxpool_backward(MaxPoolParams p) {
    for (uint32_t plane = global_thread(); plane < p.planes; plane += grid_threads()) {
        float* dx = p.y + (uint64_t)plane * p.h * p.w;
        const float* dy = p.x + (uint64_t)plane * p.oh * p.ow;
        const uint32_t* idx = p.argmax + (uint64_t)plane * p.oh * p.ow;
        for (uint32_t j = 0; j < p.h * p.w; ++j) dx[j] = 0.0f;
        for (uint32_t j = 0; j < p.oh * p.ow; ++j) {
            if (idx[j] < p.h * p.w) dx[idx[j]] += dy[j];  // never false for the forward's argmax
        }
    }
}
EMU_KERNEL(maxpool_backward, MaxPoolParams)

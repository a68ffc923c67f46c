// Max-pooling with TensorFlow SAME padding, the CUDA twin of cpu.rs. Forward: one thread per
// output value; backward: one thread per input value, gathering in output order as the CPU adds.
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
//
// A gather, one thread per input cell: the cell sums the dy of the windows that contain it and
// chose it, in row-major output order, from 0. That is the CPU's scatter (dx = 0, then dx[argmax]
// += dy in output order) seen from each input: the same additions in the same order, so the same
// bits, with no atomics and no separate zeroing pass. An index that is not the cell of a window
// containing it is never read as a match, so no index can send a write out of bounds.
extern "C" __global__ void maxpool_backward(MaxPoolParams p) {
    const uint32_t n = p.planes * p.h * p.w;
    for (uint32_t i = global_thread(); i < n; i += grid_threads()) {
        const uint32_t c = i % p.w, r = (i / p.w) % p.h, plane = i / (p.w * p.h);
        // Window oy covers padded rows oy*sh .. oy*sh + kh - 1; row r is padded row r + pad_top.
        const int pr = (int)(r + p.pad_top), pc = (int)(c + p.pad_left);
        const int oy0 = pr < (int)p.kh ? 0 : (pr - (int)p.kh) / (int)p.sh + 1;
        const int ox0 = pc < (int)p.kw ? 0 : (pc - (int)p.kw) / (int)p.sw + 1;
        const int oy1 = min(pr / (int)p.sh, (int)p.oh - 1), ox1 = min(pc / (int)p.sw, (int)p.ow - 1);
        const uint32_t me = r * p.w + c;
        const uint64_t base = (uint64_t)plane * p.oh * p.ow;
        float sum = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy) {
            for (int ox = ox0; ox <= ox1; ++ox) {
                const uint64_t j = base + (uint32_t)oy * p.ow + (uint32_t)ox;
                if (p.argmax[j] == me) sum += p.x[j];
            }
        }
        p.y[i] = sum;
    }
}
EMU_KERNEL(maxpool_backward, MaxPoolParams)

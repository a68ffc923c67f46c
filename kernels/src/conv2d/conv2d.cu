// Conv2d, the CUDA twin of cpu.rs: the three passes as implicit GEMMs on the tiled product of
// tiled_gemm.cuh. The im2col matrix is never stored: the tile copies compute, for each element
// they load, which input value (or padding zero) it stands for.
//
// x: (n, c, h, w), weight: (k, c, kh, kw), y: (n, k, oh, ow); r = (c, ky, kx) indexes the
// c*kh*kw taps of a filter and (img, oy, ox) the n*oh*ow output pixels of the batch.
// - forward:          y(k, (img, oy, ox))  = sum_r weight(k, r) col(r, (img, oy, ox))
// - backward-data:    dx(c, (img, iy, ix)) = sum_(k, ky, kx) weight(k, (c, ky, kx)) dy(k, img, oy, ox)
//                     over the taps whose output pixel (oy, ox) reads (iy, ix): a gather, no atomics
// - backward-weight:  dweight(k, r) += sum_(img, oy, ox) dy(k, (img, oy, ox)) col(r, (img, oy, ox)),
//                     the long sum split over grid.z into partials that conv2d_sum_splits adds in
//                     a fixed order, so the result does not depend on scheduling.
#include "common.cuh"
#include "tiled_gemm.cuh"

struct ConvGeom {
    uint32_t n, c, h, w, k, kh, kw, oh, ow, stride, pad;
};

struct Conv2dParams {
    float* out;  // forward: y; backward-data: dx; backward-weight: dweight, or the split partials
    const float* x;
    const float* weight;
    const float* dy;
    ConvGeom g;
    uint32_t k_per_split;  // backward-weight: pixels summed per grid.z slice
};

// The x value tap r = (c, ky, kx) sees at output pixel q = (img, oy, ox); 0 in the padding.
__device__ __forceinline__ float im2col(const ConvGeom& g, const float* x, uint32_t r, uint32_t q) {
    const uint32_t khw = g.kh * g.kw, ohw = g.oh * g.ow;
    const uint32_t c = r / khw, t = r - c * khw, ky = t / g.kw, kx = t - ky * g.kw;
    const uint32_t img = q / ohw, pix = q - img * ohw, oy = pix / g.ow, ox = pix - oy * g.ow;
    const int iy = (int)(oy * g.stride + ky) - (int)g.pad, ix = (int)(ox * g.stride + kx) - (int)g.pad;
    if (iy < 0 || ix < 0 || iy >= (int)g.h || ix >= (int)g.w) return 0.0f;
    return x[((img * g.c + c) * g.h + iy) * g.w + ix];
}

// Forward B: col(r, q), pixels q neighbours in memory.
struct Im2colByPixel {
    ConvGeom g;
    const float* x;
    bool k_contiguous;
    __device__ __forceinline__ float operator()(uint32_t r, uint32_t q) const { return im2col(g, x, r, q); }
};

// Backward-weight B: col(r, q) transposed, (q, r), summed over the pixels q.
struct Im2colByTap {
    ConvGeom g;
    const float* x;
    bool k_contiguous;
    __device__ __forceinline__ float operator()(uint32_t q, uint32_t r) const { return im2col(g, x, r, q); }
};

// Backward-data A: weight viewed as (c, (k, ky, kx)).
struct WeightByChannel {
    ConvGeom g;
    const float* weight;
    bool k_contiguous;
    __device__ __forceinline__ float operator()(uint32_t c, uint32_t s) const {
        const uint32_t khw = g.kh * g.kw, k = s / khw;
        return weight[(k * g.c + c) * khw + (s - k * khw)];
    }
};

// Backward-data B: row s = (k, ky, kx), column p = (img, iy, ix): the dy value of the output
// pixel that reads input pixel (iy, ix) through tap (ky, kx), or 0 where no output pixel does.
struct DyGather {
    ConvGeom g;
    const float* dy;
    bool k_contiguous;
    __device__ __forceinline__ float operator()(uint32_t s, uint32_t p) const {
        const uint32_t khw = g.kh * g.kw, hw = g.h * g.w;
        const uint32_t k = s / khw, t = s - k * khw, ky = t / g.kw, kx = t - ky * g.kw;
        const uint32_t img = p / hw, pix = p - img * hw, iy = pix / g.w, ix = pix - iy * g.w;
        const int ny = (int)(iy + g.pad) - (int)ky, nx = (int)(ix + g.pad) - (int)kx;
        if (ny < 0 || nx < 0) return 0.0f;
        const uint32_t oy = (uint32_t)ny / g.stride, ox = (uint32_t)nx / g.stride;
        if (oy * g.stride != (uint32_t)ny || ox * g.stride != (uint32_t)nx || oy >= g.oh || ox >= g.ow) return 0.0f;
        return dy[((img * g.k + k) * g.oh + oy) * g.ow + ox];
    }
};

// Backward-weight A: dy viewed as (k, (img, oy, ox)).
struct DyByChannel {
    ConvGeom g;
    const float* dy;
    bool k_contiguous;
    __device__ __forceinline__ float operator()(uint32_t k, uint32_t q) const {
        const uint32_t ohw = g.oh * g.ow, img = q / ohw;
        return dy[(img * g.k + k) * ohw + (q - img * ohw)];
    }
};

// Grid: (ceil(n*oh*ow / 64), ceil(k / 64)). x, weight -> y: (n, k, oh, ow), overwritten.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv2d_forward(Conv2dParams p) {
    const ConvGeom& g = p.g;
    const uint32_t taps = g.c * g.kh * g.kw, ohw = g.oh * g.ow, pixels = g.n * ohw;
    const StridedSource a{p.weight, taps, 1, true};
    const Im2colByPixel b{g, p.x, false};
    const uint32_t m0 = blockIdx.y * GEMM_TILE_M, n0 = blockIdx.x * GEMM_TILE_N;
    float acc[GEMM_REG][GEMM_REG];
    tiled_gemm(a, b, g.k, pixels, m0, n0, 0, taps, acc);
#pragma unroll
    for (int i = 0; i < GEMM_REG; ++i) {
        const uint32_t k = m0 + gemm_tile_row(i);
#pragma unroll
        for (int j = 0; j < GEMM_REG; ++j) {
            const uint32_t q = n0 + gemm_tile_col(j);
            if (k < g.k && q < pixels) {
                const uint32_t img = q / ohw;
                p.out[(img * g.k + k) * ohw + (q - img * ohw)] = acc[i][j];
            }
        }
    }
}
EMU_KERNEL(conv2d_forward, Conv2dParams)

// Grid: (ceil(n*h*w / 64), ceil(c / 64)). dy, weight -> dx: (n, c, h, w), overwritten.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv2d_backward_data(Conv2dParams p) {
    const ConvGeom& g = p.g;
    const uint32_t inner = g.k * g.kh * g.kw, hw = g.h * g.w, pixels = g.n * hw;
    const WeightByChannel a{g, p.weight, true};
    const DyGather b{g, p.dy, false};
    const uint32_t m0 = blockIdx.y * GEMM_TILE_M, n0 = blockIdx.x * GEMM_TILE_N;
    float acc[GEMM_REG][GEMM_REG];
    tiled_gemm(a, b, g.c, pixels, m0, n0, 0, inner, acc);
#pragma unroll
    for (int i = 0; i < GEMM_REG; ++i) {
        const uint32_t c = m0 + gemm_tile_row(i);
#pragma unroll
        for (int j = 0; j < GEMM_REG; ++j) {
            const uint32_t q = n0 + gemm_tile_col(j);
            if (c < g.c && q < pixels) {
                const uint32_t img = q / hw;
                p.out[(img * g.c + c) * hw + (q - img * hw)] = acc[i][j];
            }
        }
    }
}
EMU_KERNEL(conv2d_backward_data, Conv2dParams)

// Grid: (ceil(c*kh*kw / 64), ceil(k / 64), splits). dy, x -> with one split, dweight: (k, c, kh, kw)
// accumulated (+=); with several, partial z (of k*c*kh*kw values) of slice z, overwritten.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv2d_backward_weight(Conv2dParams p) {
    const ConvGeom& g = p.g;
    const uint32_t taps = g.c * g.kh * g.kw, pixels = g.n * g.oh * g.ow;
    const DyByChannel a{g, p.dy, true};
    const Im2colByTap b{g, p.x, true};
    const uint32_t m0 = blockIdx.y * GEMM_TILE_M, n0 = blockIdx.x * GEMM_TILE_N;
    const uint32_t begin = blockIdx.z * p.k_per_split, end = min(begin + p.k_per_split, pixels);
    float acc[GEMM_REG][GEMM_REG];
    tiled_gemm(a, b, g.k, taps, m0, n0, begin, end, acc);
    float* out = p.out + (size_t)blockIdx.z * g.k * taps;
#pragma unroll
    for (int i = 0; i < GEMM_REG; ++i) {
        const uint32_t k = m0 + gemm_tile_row(i);
#pragma unroll
        for (int j = 0; j < GEMM_REG; ++j) {
            const uint32_t r = n0 + gemm_tile_col(j);
            if (k < g.k && r < taps) {
                if (gridDim.z == 1) {
                    out[k * taps + r] += acc[i][j];
                } else {
                    out[k * taps + r] = acc[i][j];
                }
            }
        }
    }
}
EMU_KERNEL(conv2d_backward_weight, Conv2dParams)

struct SumSplitsParams {
    float* out;            // (n), accumulated
    const float* partial;  // (splits, n)
    uint32_t n, splits;
};

// out[i] += partial[0][i] + partial[1][i] + ..., in split order. A 1-D grid-stride launch.
extern "C" __global__ void conv2d_sum_splits(SumSplitsParams p) {
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) {
        float s = 0.0f;
        for (uint32_t z = 0; z < p.splits; ++z) s += p.partial[(size_t)z * p.n + i];
        p.out[i] += s;
    }
}
EMU_KERNEL(conv2d_sum_splits, SumSplitsParams)

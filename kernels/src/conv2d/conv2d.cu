// Conv2d, the CUDA twin of cpu.rs: the three passes as implicit GEMMs on the tiled product of
// tiled_gemm.cuh. The im2col matrix is never stored: the tile loaders compute, for each element
// they load, which input value (or padding zero) it stands for. The sources below split that
// arithmetic as tiled_gemm.cuh asks: a thread's output pixel (or tap) is decomposed once, before
// the k loop, and the other index advances per step (by FastDiv or a carry, no division).
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

// The taps r = (c, ky, kx) of a filter over planes of `plane` values (x's planes: h*w; dy's: oh*ow):
// a tap's plane offset c * plane and its (ky, kx). tap() decomposes r (no division instruction),
// next() steps to r + 1.
struct Tap {
    uint32_t plane, ky, kx;
};
struct TapWalker {
    uint32_t kh, kw, plane;
    FastDiv per_channel, per_row;  // by kh * kw, by kw
    __device__ __forceinline__ TapWalker(const ConvGeom& g, uint32_t plane_size)
        : kh(g.kh), kw(g.kw), plane(plane_size), per_channel(g.kh * g.kw), per_row(g.kw) {}
    __device__ __forceinline__ Tap tap(uint32_t r) const {
        const uint32_t c = per_channel.div(r), t = r - c * per_channel.d, ky = per_row.div(t);
        return {c * plane, ky, t - ky * kw};
    }
    __device__ __forceinline__ void next(Tap& t) const {
        if (++t.kx == kw) {
            t.kx = 0;
            if (++t.ky == kh) {
                t.ky = 0;
                t.plane += plane;
            }
        }
    }
};

// Output pixel q = (img, oy, ox): the offset of image img in x and the input pixel (iy0, ix0)
// that tap (0, 0) reads (negative in the padding).
struct Window {
    uint32_t image;
    int iy0, ix0;
};

// The implicit im2col matrix col(r, q): the x value tap r sees at output pixel q, 0 in the padding.
struct Im2col {
    ConvGeom g;
    const float* x;
    TapWalker taps;
    FastDiv per_image, per_row;  // by oh * ow, by ow
    __device__ __forceinline__ Im2col(const ConvGeom& geom, const float* x_)
        : g(geom), x(x_), taps(geom, geom.h * geom.w), per_image(geom.oh * geom.ow), per_row(geom.ow) {}
    __device__ __forceinline__ Window window(uint32_t q) const {
        const uint32_t img = per_image.div(q), pix = q - img * per_image.d, oy = per_row.div(pix);
        const uint32_t ox = pix - oy * g.ow;
        return {img * g.c * g.h * g.w, (int)(oy * g.stride) - (int)g.pad, (int)(ox * g.stride) - (int)g.pad};
    }
    __device__ __forceinline__ float value(const Window& q, const Tap& r) const {
        const int iy = q.iy0 + (int)r.ky, ix = q.ix0 + (int)r.kx;
        if ((uint32_t)iy >= g.h || (uint32_t)ix >= g.w) return 0.0f;
        return x[q.image + r.plane + (uint32_t)iy * g.w + (uint32_t)ix];
    }
};

// Forward B: col(r, q), o = pixel q (neighbours in memory), k = tap r.
struct Im2colByPixel {
    static constexpr bool k_contiguous = false;
    Im2col col;
    using Outer = Window;
    using Inner = Tap;
    __device__ __forceinline__ Outer outer(uint32_t q) const { return col.window(q); }
    __device__ __forceinline__ Inner inner(uint32_t r) const { return col.taps.tap(r); }
    __device__ __forceinline__ void next(Inner& r) const { col.taps.next(r); }
    __device__ __forceinline__ float load(const Outer& q, const Inner& r) const { return col.value(q, r); }
};

// Backward-weight B: col(r, q) transposed, o = tap r, k = pixel q (summed over; neighbours in memory).
struct Im2colByTap {
    static constexpr bool k_contiguous = true;
    Im2col col;
    using Outer = Tap;
    using Inner = Window;
    __device__ __forceinline__ Outer outer(uint32_t r) const { return col.taps.tap(r); }
    __device__ __forceinline__ Inner inner(uint32_t q) const { return col.window(q); }
    __device__ __forceinline__ float load(const Outer& r, const Inner& q) const { return col.value(q, r); }
};

// A tensor (blocks, rows, run) viewed as the matrix (rows, blocks * run): row o, column i =
// (block, j) is p[block * stride + o * run + j], stride = rows * run. Both A operands of the
// backward passes are such views:
// - backward-data A, weight (k, c, kh*kw) as (c, s), s = (k, ky, kx): run kh*kw, o = c, k = s;
// - backward-weight A, dy (n, k, oh*ow) as (k, q), q = (img, oy, ox): run oh*ow, o = k, k = q.
struct RowsOfBlocks {
    static constexpr bool k_contiguous = true;
    const float* p;
    uint32_t stride;  // rows * run, the values of one block
    FastDiv run;
    struct Outer {
        uint32_t offset;  // o * run
    };
    struct Inner {
        uint32_t offset;  // block * stride + j
    };
    __device__ __forceinline__ Outer outer(uint32_t o) const { return {o * run.d}; }
    __device__ __forceinline__ Inner inner(uint32_t i) const {
        const uint32_t block = run.div(i);
        return {block * stride + (i - block * run.d)};
    }
    __device__ __forceinline__ float load(const Outer& o, const Inner& i) const { return p[o.offset + i.offset]; }
};

// Backward-data B: row s = (k, ky, kx), column p = (img, iy, ix): the dy value of the output
// pixel that reads input pixel (iy, ix) through tap (ky, kx), or 0 where no output pixel does.
// o = p (neighbours in memory), k = s.
struct DyGather {
    static constexpr bool k_contiguous = false;
    ConvGeom g;
    const float* dy;
    TapWalker taps;        // over dy's planes of oh * ow
    FastDiv by_stride;
    struct Outer {
        uint32_t image;    // img * k * oh * ow
        int iy, ix;        // iy + pad, ix + pad
    };
    using Inner = Tap;
    __device__ __forceinline__ DyGather(const ConvGeom& geom, const float* dy_)
        : g(geom), dy(dy_), taps(geom, geom.oh * geom.ow), by_stride(geom.stride) {}
    __device__ __forceinline__ Outer outer(uint32_t p) const {
        const uint32_t hw = g.h * g.w, img = p / hw, pix = p - img * hw, iy = pix / g.w;
        return {img * g.k * g.oh * g.ow, (int)(iy + g.pad), (int)(pix - iy * g.w + g.pad)};
    }
    __device__ __forceinline__ Inner inner(uint32_t s) const { return taps.tap(s); }
    __device__ __forceinline__ void next(Inner& s) const { taps.next(s); }
    __device__ __forceinline__ float load(const Outer& p, const Inner& s) const {
        const int ny = p.iy - (int)s.ky, nx = p.ix - (int)s.kx;
        if (ny < 0 || nx < 0) return 0.0f;
        const uint32_t oy = by_stride.div((uint32_t)ny), ox = by_stride.div((uint32_t)nx);
        if (oy * g.stride != (uint32_t)ny || ox * g.stride != (uint32_t)nx || oy >= g.oh || ox >= g.ow) return 0.0f;
        return dy[p.image + s.plane + oy * g.ow + ox];
    }
};

// Grid: (ceil(n*oh*ow / Tile::BN), ceil(k / Tile::BM)). x, weight -> y: (n, k, oh, ow), overwritten.
template <class Tile>
__device__ __forceinline__ void conv2d_forward_tiled(const Conv2dParams& p) {
    const ConvGeom& g = p.g;
    const uint32_t taps = g.c * g.kh * g.kw, ohw = g.oh * g.ow, pixels = g.n * ohw;
    const StridedSource<true> a{p.weight, taps, 1};
    const Im2colByPixel b{Im2col(g, p.x)};
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    float acc[Tile::RM][Tile::RN];
    tiled_gemm<Tile>(a, b, g.k, pixels, m0, n0, 0, taps, acc);
#pragma unroll
    for (uint32_t j = 0; j < Tile::RN; ++j) {
        const uint32_t q = n0 + gemm_tile_col(j), img = q / ohw;
        float* out = p.out + (size_t)img * g.k * ohw + (q - img * ohw);
#pragma unroll
        for (uint32_t i = 0; i < Tile::RM; ++i) {
            const uint32_t k = m0 + gemm_tile_row(i);
            if (k < g.k && q < pixels) out[(size_t)k * ohw] = acc[i][j];
        }
    }
}

// Grid: (ceil(n*h*w / Tile::BN), ceil(c / Tile::BM)). dy, weight -> dx: (n, c, h, w), overwritten.
template <class Tile>
__device__ __forceinline__ void conv2d_backward_data_tiled(const Conv2dParams& p) {
    const ConvGeom& g = p.g;
    const uint32_t inner = g.k * g.kh * g.kw, hw = g.h * g.w, pixels = g.n * hw;
    const RowsOfBlocks a{p.weight, g.c * g.kh * g.kw, FastDiv(g.kh * g.kw)};
    const DyGather b(g, p.dy);
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    float acc[Tile::RM][Tile::RN];
    tiled_gemm<Tile>(a, b, g.c, pixels, m0, n0, 0, inner, acc);
#pragma unroll
    for (uint32_t j = 0; j < Tile::RN; ++j) {
        const uint32_t q = n0 + gemm_tile_col(j), img = q / hw;
        float* out = p.out + (size_t)img * g.c * hw + (q - img * hw);
#pragma unroll
        for (uint32_t i = 0; i < Tile::RM; ++i) {
            const uint32_t c = m0 + gemm_tile_row(i);
            if (c < g.c && q < pixels) out[(size_t)c * hw] = acc[i][j];
        }
    }
}

// Grid: (ceil(c*kh*kw / Tile::BN), ceil(k / Tile::BM), splits). dy, x -> with one split,
// dweight: (k, c, kh, kw) accumulated (+=); with several, partial z (of k*c*kh*kw values) of
// slice z, overwritten. Slice z sums pixels [z * k_per_split, (z + 1) * k_per_split).
template <class Tile>
__device__ __forceinline__ void conv2d_backward_weight_tiled(const Conv2dParams& p) {
    const ConvGeom& g = p.g;
    const uint32_t taps = g.c * g.kh * g.kw, ohw = g.oh * g.ow, pixels = g.n * ohw;
    const RowsOfBlocks a{p.dy, g.k * ohw, FastDiv(ohw)};
    const Im2colByTap b{Im2col(g, p.x)};
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    const uint32_t begin = blockIdx.z * p.k_per_split, end = min(begin + p.k_per_split, pixels);
    float acc[Tile::RM][Tile::RN];
    tiled_gemm<Tile>(a, b, g.k, taps, m0, n0, begin, end, acc);
    float* out = p.out + (size_t)blockIdx.z * g.k * taps;
#pragma unroll
    for (uint32_t i = 0; i < Tile::RM; ++i) {
        const uint32_t k = m0 + gemm_tile_row(i);
#pragma unroll
        for (uint32_t j = 0; j < Tile::RN; ++j) {
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

// Each pass in the two tile sizes (conv2d/cuda.rs picks one per shape): <pass>_128 and <pass>_64.
// The large tile asks for GEMM_LARGE_MIN_BLOCKS blocks per multiprocessor (tiled_gemm.cuh).
#define CONV2D_KERNEL(name, pass, Tile, min_blocks)                                              \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, min_blocks) name(Conv2dParams p) { \
        pass<Tile>(p);                                                                         \
    }                                                                                          \
    EMU_KERNEL(name, Conv2dParams)

CONV2D_KERNEL(conv2d_forward_128, conv2d_forward_tiled, GemmLarge, GEMM_LARGE_MIN_BLOCKS)
CONV2D_KERNEL(conv2d_forward_64, conv2d_forward_tiled, GemmSmall, 1)
CONV2D_KERNEL(conv2d_backward_data_128, conv2d_backward_data_tiled, GemmLarge, GEMM_LARGE_MIN_BLOCKS)
CONV2D_KERNEL(conv2d_backward_data_64, conv2d_backward_data_tiled, GemmSmall, 1)
CONV2D_KERNEL(conv2d_backward_weight_128, conv2d_backward_weight_tiled, GemmLarge, GEMM_LARGE_MIN_BLOCKS)
CONV2D_KERNEL(conv2d_backward_weight_64, conv2d_backward_weight_tiled, GemmSmall, 1)

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

// Conv2d on tensor cores: the three implicit GEMMs of conv2d.cu on the tile core of
// tc_gemm.cuh, with the operands in TF32 (FP32 in memory, rounded in registers) or BF16 (BF16 in
// memory), FP32 accumulation and FP32 outputs. The index maps are conv2d.cu's:
// - forward:          y(k, (img, oy, ox))  = sum_r weight(k, r) col(r, (img, oy, ox)),  r = (c, ky, kx)
//     A = weight (k, c*kh*kw) as stored: a k-major strided view (16-byte copies when c*kh*kw % 4 == 0
//     for FP32, % 8 for BF16, else element by element);
//     B = the im2col matrix col(r, q), never stored: an o-major view (o = output pixel q, whose
//     neighbours are neighbours in x along a row) that gives each element's address in x, or none
//     in the padding.
// - backward-data:    dx(c, (img, iy, ix)) = sum_(k, ky, kx) weight(k, (c, ky, kx)) dy(k, img, oy, ox)
//     A = weight as (c, s), s = (k, ky, kx) (TcRowsOfBlocks, k-major); B = the dy gather
//     (TcDyGather, o-major: o = input pixel, k = s; none where no output pixel reads (iy, ix)).
// - backward-weight:  dweight(k, r) += sum_(img, oy, ox) dy(k, (img, oy, ox)) col(r, (img, oy, ox))
//     A = dy as (k, q) (TcRowsOfBlocks, k-major); B = col transposed (TcIm2colByTap, k-major:
//     o = tap r, k = pixel q), the pixel sum split over grid.z into partials that conv2d.cu's
//     conv2d_sum_splits adds in a fixed order.
// The gathered operands (im2col, the dy gather) go element by element (4-byte cp.async for FP32; a
// load and a store for BF16), since a run of 4 or 8 of their elements is neither contiguous nor
// aligned in general (padding, row ends, stride); so do the backward passes' rows-of-blocks views
// (a run of kh*kw or oh*ow values breaks at every block): the layout question (NCHW, or NHWC with
// c contiguous and 16-byte copies) is for measurement (cuda-notes.md).
// The index arithmetic mirrors conv2d.cu's (one decomposition of the pixel and of the tap per
// step, a carry for the next ones).
#include "common.cuh"
#include "tiled_gemm.cuh"
#include "tc_gemm.cuh"

// conv2d.cu's ConvGeom (the same Rust twin, conv2d::cuda::ConvGeomC): x: (n, c, h, w),
// weight: (k, c, kh, kw), y: (n, k, oh, ow).
struct ConvGeom {
    uint32_t n, c, h, w, k, kh, kw, oh, ow, stride, pad;
};

struct TcConvParams {
    float* out;          // forward: y; backward-data: dx; backward-weight: dweight, or the split partials
    const void* x;       // (n, c, h, w): float (TF32 kernels) or bf16_t
    const void* weight;  // (k, c, kh, kw), the same type
    const void* dy;      // (n, k, oh, ow), the same type
    ConvGeom g;
    uint32_t k_per_split;  // backward-weight: pixels summed per grid.z slice
};

// col(r, q) as the tile core's o-major view: o = q = (img, oy, ox), k = r = (c, ky, kx).
template <class T>
struct TcIm2colView {
    using Elem = T;
    static constexpr bool k_major = false, vectors = false;
    const T* x;
    ConvGeom g;
    FastDiv per_image, per_row, per_channel, per_tap_row;  // by oh*ow, ow, kh*kw, kw
    struct Outer {
        uint32_t image;  // img * c * h * w
        int iy0, ix0;    // the input pixel tap (0, 0) reads (negative in the padding)
    };
    struct Inner {
        uint32_t plane, ky, kx;  // c * h * w's plane offset, and the tap's (ky, kx)
    };
    __device__ __forceinline__ TcIm2colView(const T* x_, const ConvGeom& geom)
        : x(x_), g(geom), per_image(geom.oh * geom.ow), per_row(geom.ow), per_channel(geom.kh * geom.kw),
          per_tap_row(geom.kw) {}
    __device__ __forceinline__ Outer outer(uint32_t q) const {
        const uint32_t img = per_image.div(q), pix = q - img * per_image.d, oy = per_row.div(pix);
        const uint32_t ox = pix - oy * g.ow;
        return {img * g.c * g.h * g.w, (int)(oy * g.stride) - (int)g.pad, (int)(ox * g.stride) - (int)g.pad};
    }
    __device__ __forceinline__ Inner inner(uint32_t r) const {
        const uint32_t c = per_channel.div(r), t = r - c * per_channel.d, ky = per_tap_row.div(t);
        return {c * g.h * g.w, ky, t - ky * g.kw};
    }
    __device__ __forceinline__ void next(Inner& r) const {
        if (++r.kx == g.kw) {
            r.kx = 0;
            if (++r.ky == g.kh) {
                r.ky = 0;
                r.plane += g.h * g.w;
            }
        }
    }
    __device__ __forceinline__ const T* address(const Outer& q, const Inner& r) const {
        const int iy = q.iy0 + (int)r.ky, ix = q.ix0 + (int)r.kx;
        if ((uint32_t)iy >= g.h || (uint32_t)ix >= g.w) return nullptr;
        return x + q.image + r.plane + (uint32_t)iy * g.w + (uint32_t)ix;
    }
};

// A tensor (blocks, rows, run) as the matrix (rows, blocks * run), k-major (conv2d.cu's
// RowsOfBlocks): row o, column i = (block, j) is p[block * stride + o * run + j], stride = rows * run.
// - backward-data A, weight (k, c, kh*kw) as (c, s), s = (k, ky, kx): run kh*kw, o = c;
// - backward-weight A, dy (n, k, oh*ow) as (k, q), q = (img, oy, ox): run oh*ow, o = k.
template <class T>
struct TcRowsOfBlocks {
    using Elem = T;
    static constexpr bool k_major = true, vectors = false;
    const T* p;
    uint32_t stride;  // rows * run, the values of one block
    FastDiv run;
    struct Outer {
        uint32_t offset;  // o * run
    };
    struct Inner {
        uint32_t offset, j;  // block * stride + j, and j
    };
    __device__ __forceinline__ Outer outer(uint32_t o) const { return {o * run.d}; }
    __device__ __forceinline__ Inner inner(uint32_t i) const {
        const uint32_t block = run.div(i), j = i - block * run.d;
        return {block * stride + j, j};
    }
    __device__ __forceinline__ void next(Inner& i) const {
        if (++i.j == run.d) {
            i.j = 0;
            i.offset += stride - run.d + 1;
        } else {
            ++i.offset;
        }
    }
    __device__ __forceinline__ const T* address(const Outer& o, const Inner& i) const { return p + o.offset + i.offset; }
};

// Backward-data B (conv2d.cu's DyGather): row s = (k, ky, kx), column p = (img, iy, ix): the dy
// value of the output pixel that reads input pixel (iy, ix) through tap (ky, kx), or none where no
// output pixel does. o = p (neighbours in memory), k = s.
template <class T>
struct TcDyGather {
    using Elem = T;
    static constexpr bool k_major = false, vectors = false;
    const T* dy;
    ConvGeom g;
    FastDiv per_image, per_row, per_channel, per_tap_row, by_stride;  // by h*w, w, kh*kw, kw, stride
    struct Outer {
        uint32_t image;  // img * k * oh * ow
        int iy, ix;      // iy + pad, ix + pad
    };
    struct Inner {
        uint32_t plane, ky, kx;  // k * oh * ow's plane offset, and the tap's (ky, kx)
    };
    __device__ __forceinline__ TcDyGather(const T* dy_, const ConvGeom& geom)
        : dy(dy_), g(geom), per_image(geom.h * geom.w), per_row(geom.w), per_channel(geom.kh * geom.kw),
          per_tap_row(geom.kw), by_stride(geom.stride) {}
    __device__ __forceinline__ Outer outer(uint32_t p) const {
        const uint32_t img = per_image.div(p), pix = p - img * per_image.d, iy = per_row.div(pix);
        return {img * g.k * g.oh * g.ow, (int)(iy + g.pad), (int)(pix - iy * g.w + g.pad)};
    }
    __device__ __forceinline__ Inner inner(uint32_t s) const {
        const uint32_t k = per_channel.div(s), t = s - k * per_channel.d, ky = per_tap_row.div(t);
        return {k * g.oh * g.ow, ky, t - ky * g.kw};
    }
    __device__ __forceinline__ void next(Inner& s) const {
        if (++s.kx == g.kw) {
            s.kx = 0;
            if (++s.ky == g.kh) {
                s.ky = 0;
                s.plane += g.oh * g.ow;
            }
        }
    }
    __device__ __forceinline__ const T* address(const Outer& p, const Inner& s) const {
        const int ny = p.iy - (int)s.ky, nx = p.ix - (int)s.kx;
        if (ny < 0 || nx < 0) return nullptr;
        const uint32_t oy = by_stride.div((uint32_t)ny), ox = by_stride.div((uint32_t)nx);
        if (oy * g.stride != (uint32_t)ny || ox * g.stride != (uint32_t)nx || oy >= g.oh || ox >= g.ow) return nullptr;
        return dy + p.image + s.plane + oy * g.ow + ox;
    }
};

// Backward-weight B (conv2d.cu's Im2colByTap): col(r, q) transposed, o = tap r, k = pixel q (summed
// over; neighbours in memory along a row).
template <class T>
struct TcIm2colByTap {
    using Elem = T;
    static constexpr bool k_major = true, vectors = false;
    const T* x;
    ConvGeom g;
    FastDiv per_image, per_row, per_channel, per_tap_row;  // by oh*ow, ow, kh*kw, kw
    struct Outer {
        uint32_t plane, ky, kx;  // c * h * w's plane offset, and the tap's (ky, kx)
    };
    struct Inner {
        uint32_t image, oy, ox;  // img * c * h * w, and the output pixel
    };
    __device__ __forceinline__ TcIm2colByTap(const T* x_, const ConvGeom& geom)
        : x(x_), g(geom), per_image(geom.oh * geom.ow), per_row(geom.ow), per_channel(geom.kh * geom.kw),
          per_tap_row(geom.kw) {}
    __device__ __forceinline__ Outer outer(uint32_t r) const {
        const uint32_t c = per_channel.div(r), t = r - c * per_channel.d, ky = per_tap_row.div(t);
        return {c * g.h * g.w, ky, t - ky * g.kw};
    }
    __device__ __forceinline__ Inner inner(uint32_t q) const {
        const uint32_t img = per_image.div(q), pix = q - img * per_image.d, oy = per_row.div(pix);
        return {img * g.c * g.h * g.w, oy, pix - oy * g.ow};
    }
    __device__ __forceinline__ void next(Inner& q) const {
        if (++q.ox == g.ow) {
            q.ox = 0;
            if (++q.oy == g.oh) {
                q.oy = 0;
                q.image += g.c * g.h * g.w;
            }
        }
    }
    __device__ __forceinline__ const T* address(const Outer& r, const Inner& q) const {
        const int iy = (int)(q.oy * g.stride + r.ky) - (int)g.pad, ix = (int)(q.ox * g.stride + r.kx) - (int)g.pad;
        if ((uint32_t)iy >= g.h || (uint32_t)ix >= g.w) return nullptr;
        return x + q.image + r.plane + (uint32_t)iy * g.w + (uint32_t)ix;
    }
};

// Stores this thread's accumulators of a (rows, n*plane) output tile at (m0, n0) into out: (n,
// rows, plane), column q = (img, pixel): y (rows k, plane oh*ow) or dx (rows c, plane h*w).
template <class Tile>
__device__ __forceinline__ void tc_store_planes(float* out, const float (&acc)[Tile::MT][Tile::NT][4], uint32_t m0,
                                                uint32_t n0, uint32_t rows, uint32_t plane, uint32_t columns) {
    const FastDiv per_image(plane);
#pragma unroll
    for (uint32_t j = 0; j < Tile::NT; ++j) {
#pragma unroll
        for (uint32_t r = 0; r < 2; ++r) {
            const uint32_t q = n0 + tc_col<Tile>(j, r), img = per_image.div(q);
            float* dst = out + (size_t)img * rows * plane + (q - img * plane);
#pragma unroll
            for (uint32_t i = 0; i < Tile::MT; ++i) {
#pragma unroll
                for (uint32_t h = 0; h < 2; ++h) {
                    const uint32_t row = m0 + tc_row<Tile>(i, 2 * h);
                    if (row < rows && q < columns) dst[(size_t)row * plane] = acc[i][j][2 * h + r];
                }
            }
        }
    }
}

// Grid: (ceil(n*oh*ow / Tile::BN), ceil(k / Tile::BM)), TC_THREADS threads, Tile::SMEM_BYTES of
// dynamic shared memory (every pass). x, weight -> y: (n, k, oh, ow), overwritten.
template <class Tile>
__device__ __forceinline__ void conv2d_forward_tc(const TcConvParams& p) {
    using T = typename Tile::Elem;
    CUDA_DYNAMIC_SHARED(float4, conv_smem);  // 16-byte aligned, as cp.async and ldmatrix need
    const ConvGeom& g = p.g;
    const uint32_t taps = g.c * g.kh * g.kw, ohw = g.oh * g.ow, pixels = g.n * ohw;
    const TcStridedView<T, true> a{static_cast<const T*>(p.weight), taps, 1};
    const TcIm2colView<T> b(static_cast<const T*>(p.x), g);
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    float acc[Tile::MT][Tile::NT][4];
    tc_gemm<Tile>(a, b, g.k, pixels, m0, n0, 0, taps, reinterpret_cast<unsigned char*>(conv_smem), acc);
    tc_store_planes<Tile>(p.out, acc, m0, n0, g.k, ohw, pixels);
}

// Grid: (ceil(n*h*w / Tile::BN), ceil(c / Tile::BM)). dy, weight -> dx: (n, c, h, w), overwritten.
template <class Tile>
__device__ __forceinline__ void conv2d_backward_data_tc(const TcConvParams& p) {
    using T = typename Tile::Elem;
    CUDA_DYNAMIC_SHARED(float4, conv_smem);
    const ConvGeom& g = p.g;
    const uint32_t inner = g.k * g.kh * g.kw, hw = g.h * g.w, pixels = g.n * hw;
    const TcRowsOfBlocks<T> a{static_cast<const T*>(p.weight), g.c * g.kh * g.kw, FastDiv(g.kh * g.kw)};
    const TcDyGather<T> b(static_cast<const T*>(p.dy), g);
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    float acc[Tile::MT][Tile::NT][4];
    tc_gemm<Tile>(a, b, g.c, pixels, m0, n0, 0, inner, reinterpret_cast<unsigned char*>(conv_smem), acc);
    tc_store_planes<Tile>(p.out, acc, m0, n0, g.c, hw, pixels);
}

// Grid: (ceil(c*kh*kw / Tile::BN), ceil(k / Tile::BM), splits). dy, x -> with one split,
// dweight: (k, c, kh, kw) accumulated (+=); with several, partial z (of k*c*kh*kw values) of
// slice z, overwritten. Slice z sums pixels [z * k_per_split, (z + 1) * k_per_split).
template <class Tile>
__device__ __forceinline__ void conv2d_backward_weight_tc(const TcConvParams& p) {
    using T = typename Tile::Elem;
    CUDA_DYNAMIC_SHARED(float4, conv_smem);
    const ConvGeom& g = p.g;
    const uint32_t taps = g.c * g.kh * g.kw, ohw = g.oh * g.ow, pixels = g.n * ohw;
    const TcRowsOfBlocks<T> a{static_cast<const T*>(p.dy), g.k * ohw, FastDiv(ohw)};
    const TcIm2colByTap<T> b(static_cast<const T*>(p.x), g);
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    const uint32_t begin = blockIdx.z * p.k_per_split, end = min(begin + p.k_per_split, pixels);
    float acc[Tile::MT][Tile::NT][4];
    tc_gemm<Tile>(a, b, g.k, taps, m0, n0, begin, end, reinterpret_cast<unsigned char*>(conv_smem), acc);
    float* out = p.out + (size_t)blockIdx.z * g.k * taps;
#pragma unroll
    for (uint32_t i = 0; i < Tile::MT; ++i) {
#pragma unroll
        for (uint32_t h = 0; h < 2; ++h) {
            const uint32_t k = m0 + tc_row<Tile>(i, 2 * h);
#pragma unroll
            for (uint32_t j = 0; j < Tile::NT; ++j) {
#pragma unroll
                for (uint32_t r = 0; r < 2; ++r) {
                    const uint32_t tap = n0 + tc_col<Tile>(j, r);
                    if (k < g.k && tap < taps) {
                        if (gridDim.z == 1) {
                            out[k * taps + tap] += acc[i][j][2 * h + r];
                        } else {
                            out[k * taps + tap] = acc[i][j][2 * h + r];
                        }
                    }
                }
            }
        }
    }
}

// Each pass in both precisions and both tiles: <pass>_<tf32|bf16>_<128|64>. The large tile asks
// for two blocks per multiprocessor, the small one for four (gemm_tc.cu).
#define CONV2D_TC_KERNEL(name, pass, Tile, min_blocks)                                             \
    extern "C" __global__ void __launch_bounds__(TC_THREADS, min_blocks) name(TcConvParams p) {   \
        pass<Tile>(p);                                                                             \
    }                                                                                              \
    EMU_KERNEL(name, TcConvParams)

CONV2D_TC_KERNEL(conv2d_forward_tf32_128, conv2d_forward_tc, TcTf32Large, 2)
CONV2D_TC_KERNEL(conv2d_forward_tf32_64, conv2d_forward_tc, TcTf32Small, 4)
CONV2D_TC_KERNEL(conv2d_forward_bf16_128, conv2d_forward_tc, TcBf16Large, 2)
CONV2D_TC_KERNEL(conv2d_forward_bf16_64, conv2d_forward_tc, TcBf16Small, 4)
CONV2D_TC_KERNEL(conv2d_backward_data_tf32_128, conv2d_backward_data_tc, TcTf32Large, 2)
CONV2D_TC_KERNEL(conv2d_backward_data_tf32_64, conv2d_backward_data_tc, TcTf32Small, 4)
CONV2D_TC_KERNEL(conv2d_backward_data_bf16_128, conv2d_backward_data_tc, TcBf16Large, 2)
CONV2D_TC_KERNEL(conv2d_backward_data_bf16_64, conv2d_backward_data_tc, TcBf16Small, 4)
CONV2D_TC_KERNEL(conv2d_backward_weight_tf32_128, conv2d_backward_weight_tc, TcTf32Large, 2)
CONV2D_TC_KERNEL(conv2d_backward_weight_tf32_64, conv2d_backward_weight_tc, TcTf32Small, 4)
CONV2D_TC_KERNEL(conv2d_backward_weight_bf16_128, conv2d_backward_weight_tc, TcBf16Large, 2)
CONV2D_TC_KERNEL(conv2d_backward_weight_bf16_64, conv2d_backward_weight_tc, TcBf16Small, 4)

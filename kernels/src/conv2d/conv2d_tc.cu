// Conv2d forward on tensor cores: the implicit GEMM of conv2d.cu's forward pass,
//   y(k, (img, oy, ox)) = sum_r weight(k, r) col(r, (img, oy, ox)),  r = (c, ky, kx),
// on the tile core of tc_gemm.cuh, with the operands in TF32 (FP32 x and weight, rounded in
// registers) or BF16 (BF16 x and weight), FP32 accumulation and an FP32 y.
// - A = weight (k, c*kh*kw) as stored: a k-major strided view (16-byte copies when c*kh*kw % 4 == 0
//   for FP32, % 8 for BF16, else element by element);
// - B = the im2col matrix col(r, q), never stored: an o-major view (o = output pixel q, whose
//   neighbours are neighbours in x along a row) that gives each element's address in x, or none
//   in the padding. Its elements go one by one (4-byte cp.async for FP32; a load and a store for
//   BF16), since a row of 4 or 8 pixels is neither contiguous nor aligned in general (padding,
//   row ends, stride): the layout question (NCHW, or NHWC with c contiguous and 16-byte copies)
//   is for measurement (cuda-notes.md).
// The index arithmetic mirrors conv2d.cu's Im2col (one decomposition of the pixel and of the
// tap per step, a carry for the next taps).
#include "common.cuh"
#include "tiled_gemm.cuh"
#include "tc_gemm.cuh"

// conv2d.cu's ConvGeom (the same Rust twin, conv2d::cuda::ConvGeomC): x: (n, c, h, w),
// weight: (k, c, kh, kw), y: (n, k, oh, ow).
struct ConvGeom {
    uint32_t n, c, h, w, k, kh, kw, oh, ow, stride, pad;
};

struct TcConvParams {
    float* y;            // (n, k, oh, ow), overwritten
    const void* x;       // (n, c, h, w): float (TF32 kernels) or bf16_t
    const void* weight;  // (k, c, kh, kw), the same type
    ConvGeom g;
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

// Grid: (ceil(n*oh*ow / Tile::BN), ceil(k / Tile::BM)), TC_THREADS threads, Tile::SMEM_BYTES of
// dynamic shared memory. x, weight -> y: (n, k, oh, ow), overwritten.
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
    const FastDiv per_image(ohw);
#pragma unroll
    for (uint32_t j = 0; j < Tile::NT; ++j) {
#pragma unroll
        for (uint32_t r = 0; r < 2; ++r) {
            const uint32_t q = n0 + tc_col<Tile>(j, r), img = per_image.div(q);
            float* out = p.y + (size_t)img * g.k * ohw + (q - img * ohw);
#pragma unroll
            for (uint32_t i = 0; i < Tile::MT; ++i) {
#pragma unroll
                for (uint32_t h = 0; h < 2; ++h) {
                    const uint32_t k = m0 + tc_row<Tile>(i, 2 * h);
                    if (k < g.k && q < pixels) out[(size_t)k * ohw] = acc[i][j][2 * h + r];
                }
            }
        }
    }
}

// The large tile asks for two blocks per multiprocessor, the small one for four (gemm_tc.cu).
#define CONV2D_TC_KERNEL(name, Tile, min_blocks)                                                     \
    extern "C" __global__ void __launch_bounds__(TC_THREADS, min_blocks) name(TcConvParams p) {   \
        conv2d_forward_tc<Tile>(p);                                                                \
    }                                                                                              \
    EMU_KERNEL(name, TcConvParams)

CONV2D_TC_KERNEL(conv2d_forward_tf32_128, TcTf32Large, 2)
CONV2D_TC_KERNEL(conv2d_forward_tf32_64, TcTf32Small, 4)
CONV2D_TC_KERNEL(conv2d_forward_bf16_128, TcBf16Large, 2)
CONV2D_TC_KERNEL(conv2d_forward_bf16_64, TcBf16Small, 4)

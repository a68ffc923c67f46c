// The GEMM on tensor cores, the twin of sgemm (gemm.cu) in reduced-precision operands with FP32
// accumulation: c = alpha * op(a) op(b) + beta * c, row-major, op(x) = x or x^T, through the
// tensor-core tiled product of tc_gemm.cuh.
// - gemm_tf32_{128,64}_{nn,nt,tn,tt}: a and b are FP32, rounded to TF32 (cvt.rna) as they are used;
// - gemm_bf16_{128,64}_{nn,nt,tn,tt}: a and b are BF16 (the mixed-precision copies);
// c is FP32 in all. gemm/tc.rs picks the tile (128 x 128 or 64 x 64) per shape and the kernel of
// the transpose pair. With beta == 0, c is only written, as in BLAS.
#include "common.cuh"
#include "tc_gemm.cuh"

struct TcGemmParams {
    float* c;       // (m, n)
    const void* a;  // (m, k) stored, or (k, m) in the _t? kernels; float (TF32 kernels) or bf16_t
    const void* b;  // (k, n) stored, or (n, k) in the _?t kernels
    float alpha, beta;
    uint32_t m, n, k;
};

// op(a)(row, kk): a as stored is k-major (o stride k), a^T o-major.
template <class T, bool TransA>
__device__ __forceinline__ TcStridedView<T, !TransA> tc_gemm_a(const TcGemmParams& p) {
    const T* a = static_cast<const T*>(p.a);
    if constexpr (TransA) return {a, 1, p.m};
    else return {a, p.k, 1};
}
// op(b)(kk, col): b as stored is o-major (columns contiguous), b^T k-major.
template <class T, bool TransB>
__device__ __forceinline__ TcStridedView<T, TransB> tc_gemm_b(const TcGemmParams& p) {
    const T* b = static_cast<const T*>(p.b);
    if constexpr (TransB) return {b, p.k, 1};
    else return {b, 1, p.n};
}

template <class Tile, bool TransA, bool TransB>
__device__ __forceinline__ void tc_gemm_block(const TcGemmParams& p, unsigned char* smem) {
    using T = typename Tile::Elem;
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    float acc[Tile::MT][Tile::NT][4];
    tc_gemm<Tile>(tc_gemm_a<T, TransA>(p), tc_gemm_b<T, TransB>(p), p.m, p.n, m0, n0, 0, p.k, smem, acc);
#pragma unroll
    for (uint32_t i = 0; i < Tile::MT; ++i) {
#pragma unroll
        for (uint32_t j = 0; j < Tile::NT; ++j) {
#pragma unroll
            for (uint32_t r = 0; r < 4; ++r) {
                const uint32_t row = m0 + tc_row<Tile>(i, r), col = n0 + tc_col<Tile>(j, r);
                if (row < p.m && col < p.n) {
                    float* out = p.c + (size_t)row * p.n + col;
                    const float v = acc[i][j][r];
                    *out = p.beta == 0.0f ? p.alpha * v : p.alpha * v + p.beta * *out;
                }
            }
        }
    }
}

// Grid: (ceil(n / Tile::BN), ceil(m / Tile::BM)), TC_THREADS threads, Tile::SMEM_BYTES of dynamic
// shared memory. One kernel per transpose pair (the suffix: n or t for a, then b): each has its
// own shared layouts, and ptxas allocates one kernel's registers for the largest of the branches
// it holds (the four pairs in one 128 x 128 TF32 kernel took 255 registers and spilled; each
// alone takes under 200).
template <class Tile, bool TransA, bool TransB>
__device__ __forceinline__ void tc_gemm_kernel(const TcGemmParams& p) {
    CUDA_DYNAMIC_SHARED(float4, smem_f4);  // float4: 16-byte aligned, as cp.async and ldmatrix need
    tc_gemm_block<Tile, TransA, TransB>(p, reinterpret_cast<unsigned char*>(smem_f4));
}

// The large tiles ask for two blocks per multiprocessor (at most 255 registers a thread; their
// shared memory allows two on an H100, one on an A100); the small ones for four.
#define TC_GEMM_KERNEL(name, Tile, min_blocks, ta, tb)                                              \
    extern "C" __global__ void __launch_bounds__(TC_THREADS, min_blocks) name(TcGemmParams p) {  \
        tc_gemm_kernel<Tile, ta, tb>(p);                                                          \
    }                                                                                             \
    EMU_KERNEL(name, TcGemmParams)
#define TC_GEMM_KERNELS(name, Tile, min_blocks)                         \
    TC_GEMM_KERNEL(name##_nn, Tile, min_blocks, false, false)           \
    TC_GEMM_KERNEL(name##_nt, Tile, min_blocks, false, true)            \
    TC_GEMM_KERNEL(name##_tn, Tile, min_blocks, true, false)            \
    TC_GEMM_KERNEL(name##_tt, Tile, min_blocks, true, true)

TC_GEMM_KERNELS(gemm_tf32_128, TcTf32Large, 2)
TC_GEMM_KERNELS(gemm_tf32_64, TcTf32Small, 4)
TC_GEMM_KERNELS(gemm_bf16_128, TcBf16Large, 2)
TC_GEMM_KERNELS(gemm_bf16_64, TcBf16Small, 4)

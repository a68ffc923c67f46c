// SGEMM, the CUDA twin of kernels::gemm::sgemm: c = alpha * op(a) op(b) + beta * c, row-major,
// op(x) = x or x^T, through the shared-memory tiled product of tiled_gemm.cuh, in its two tile
// sizes (sgemm_128 and sgemm_64; gemm/cuda.rs picks one per shape). With beta == 0, c is only
// written, as in BLAS.
#include "common.cuh"
#include "tiled_gemm.cuh"

struct SgemmParams {
    float* c;        // (m, n)
    const float* a;  // (m, k) stored, or (k, m) with trans_a
    const float* b;  // (k, n) stored, or (n, k) with trans_b
    float alpha, beta;
    uint32_t m, n, k;
    uint32_t trans_a, trans_b;
};

// op(a)(row, kk) = a as a source of rows (k contiguous as stored), or of a^T (rows contiguous).
template <bool TransA>
__device__ __forceinline__ StridedSource<!TransA> sgemm_a(const SgemmParams& p) {
    if constexpr (TransA) return {p.a, 1, p.m};
    else return {p.a, p.k, 1};
}
// op(b)(kk, col) = b as a source of columns (columns contiguous as stored), or of b^T (k contiguous).
template <bool TransB>
__device__ __forceinline__ StridedSource<TransB> sgemm_b(const SgemmParams& p) {
    if constexpr (TransB) return {p.b, p.k, 1};
    else return {p.b, 1, p.n};
}

template <class Tile, bool TransA, bool TransB>
__device__ __forceinline__ void sgemm_tiled(const SgemmParams& p) {
    const uint32_t m0 = blockIdx.y * Tile::BM, n0 = blockIdx.x * Tile::BN;
    float acc[Tile::RM][Tile::RN];
    tiled_gemm<Tile>(sgemm_a<TransA>(p), sgemm_b<TransB>(p), p.m, p.n, m0, n0, 0, p.k, acc);
#pragma unroll
    for (uint32_t i = 0; i < Tile::RM; ++i) {
        const uint32_t row = m0 + gemm_tile_row(i);
#pragma unroll
        for (uint32_t j = 0; j < Tile::RN; ++j) {
            const uint32_t col = n0 + gemm_tile_col(j);
            if (row < p.m && col < p.n) {
                float* out = p.c + (size_t)row * p.n + col;
                *out = p.beta == 0.0f ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * *out;
            }
        }
    }
}

// Grid: (ceil(n / Tile::BN), ceil(m / Tile::BM)), GEMM_THREADS threads. op(a): (m, k),
// op(b): (k, n) -> c: (m, n). The transposes are template arguments (each its own loader
// layout), chosen here once per block.
template <class Tile>
__device__ __forceinline__ void sgemm_any(const SgemmParams& p) {
    if (p.trans_a) {
        if (p.trans_b) sgemm_tiled<Tile, true, true>(p);
        else sgemm_tiled<Tile, true, false>(p);
    } else {
        if (p.trans_b) sgemm_tiled<Tile, false, true>(p);
        else sgemm_tiled<Tile, false, false>(p);
    }
}

// The large tile asks for GEMM_LARGE_MIN_BLOCKS blocks per multiprocessor (tiled_gemm.cuh).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS, GEMM_LARGE_MIN_BLOCKS) sgemm_128(SgemmParams p) { sgemm_any<GemmLarge>(p); }
EMU_KERNEL(sgemm_128, SgemmParams)

extern "C" __global__ void __launch_bounds__(GEMM_THREADS) sgemm_64(SgemmParams p) { sgemm_any<GemmSmall>(p); }
EMU_KERNEL(sgemm_64, SgemmParams)

// tiled_gemm.cuh: the shared-memory tiled matrix product that the GEMM (gemm.cu) and the three
// convolution passes (conv2d.cu, implicit GEMM) are built from.
//
// A block of GEMM_THREADS = 256 threads computes a GEMM_TILE_M x GEMM_TILE_N = 64 x 64 tile of
// C = A B (A: (m, k), B: (k, n)). Per step of GEMM_TILE_K = 16 along k, the block copies the
// 64 x 16 slice of A and the 16 x 64 slice of B into shared memory (zeros outside the matrices),
// meets at a barrier, and each thread multiplies them into its 4 x 4 register tile: rows
// ty + 16 i and columns tx + 16 j of the block tile (tx = tid % 16, ty = tid / 16), so that a
// warp reads 16 consecutive B values and broadcasts 2 A values from shared memory.
//
// A and B are *sources*, functors `float operator()(uint32_t row, uint32_t col) const` that give
// one in-range element: a strided matrix for the GEMM, the implicit im2col matrix of a
// convolution (computed from the input's indices, never stored). Each says with
// `k_contiguous` whether neighbouring k indices are neighbours in memory, and the copy walks
// that axis fastest across threads, so that a warp's loads coalesce.
//
// Every output sums its k products in increasing k, one rounding per multiply-add.
#pragma once

#include "common.cuh"

#define GEMM_TILE_M 64
#define GEMM_TILE_N 64
#define GEMM_TILE_K 16
#define GEMM_THREADS 256
#define GEMM_REG 4  // each thread's tile is GEMM_REG x GEMM_REG

// The block-tile row of this thread's register-tile row i, and the column of its column j.
__device__ __forceinline__ uint32_t gemm_tile_row(uint32_t i) { return threadIdx.x / 16 + 16 * i; }
__device__ __forceinline__ uint32_t gemm_tile_col(uint32_t j) { return threadIdx.x % 16 + 16 * j; }

// A row-major matrix used as stored or transposed: element (r, c) at p[r * row_stride + c * col_stride].
struct StridedSource {
    const float* p;
    uint32_t row_stride, col_stride;
    bool k_contiguous;
    __device__ __forceinline__ float operator()(uint32_t r, uint32_t c) const {
        return p[r * row_stride + c * col_stride];
    }
};

// acc = A[m0.., k_begin..k_end) B[k_begin..k_end), n0..) for this block's tile (m0, n0), A: (m, k),
// B: (k, n); acc is this thread's GEMM_REG x GEMM_REG tile, overwritten. Every thread of the block
// must call it (it meets at barriers).
template <class ASource, class BSource>
__device__ __forceinline__ void tiled_gemm(const ASource& a, const BSource& b, uint32_t m, uint32_t n,
                                           uint32_t m0, uint32_t n0, uint32_t k_begin, uint32_t k_end,
                                           float (&acc)[GEMM_REG][GEMM_REG]) {
    // k-major tiles, each row padded by one float against bank conflicts on the transposing stores.
    __shared__ float as[GEMM_TILE_K][GEMM_TILE_M + 1];
    __shared__ float bs[GEMM_TILE_K][GEMM_TILE_N + 1];
    const uint32_t tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < GEMM_REG; ++i) {
#pragma unroll
        for (int j = 0; j < GEMM_REG; ++j) acc[i][j] = 0.0f;
    }
    for (uint32_t k0 = k_begin; k0 < k_end; k0 += GEMM_TILE_K) {
#pragma unroll
        for (uint32_t l = 0; l < GEMM_TILE_M * GEMM_TILE_K / GEMM_THREADS; ++l) {
            const uint32_t idx = tid + l * GEMM_THREADS;
            const uint32_t r = a.k_contiguous ? idx / GEMM_TILE_K : idx % GEMM_TILE_M;
            const uint32_t kk = a.k_contiguous ? idx % GEMM_TILE_K : idx / GEMM_TILE_M;
            const uint32_t gr = m0 + r, gk = k0 + kk;
            as[kk][r] = (gr < m && gk < k_end) ? a(gr, gk) : 0.0f;
        }
#pragma unroll
        for (uint32_t l = 0; l < GEMM_TILE_N * GEMM_TILE_K / GEMM_THREADS; ++l) {
            const uint32_t idx = tid + l * GEMM_THREADS;
            const uint32_t c = b.k_contiguous ? idx / GEMM_TILE_K : idx % GEMM_TILE_N;
            const uint32_t kk = b.k_contiguous ? idx % GEMM_TILE_K : idx / GEMM_TILE_N;
            const uint32_t gc = n0 + c, gk = k0 + kk;
            bs[kk][c] = (gc < n && gk < k_end) ? b(gk, gc) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (uint32_t kk = 0; kk < GEMM_TILE_K; ++kk) {
            float av[GEMM_REG], bv[GEMM_REG];
#pragma unroll
            for (int i = 0; i < GEMM_REG; ++i) av[i] = as[kk][gemm_tile_row(i)];
#pragma unroll
            for (int j = 0; j < GEMM_REG; ++j) bv[j] = bs[kk][gemm_tile_col(j)];
#pragma unroll
            for (int i = 0; i < GEMM_REG; ++i) {
#pragma unroll
                for (int j = 0; j < GEMM_REG; ++j) acc[i][j] += av[i] * bv[j];
            }
        }
        __syncthreads();  // the tiles are read before the next step overwrites them
    }
}

// SGEMM, the CUDA twin of kernels::gemm::sgemm: c = alpha * op(a) op(b) + beta * c, row-major,
// op(x) = x or x^T, through the shared-memory tiled product of tiled_gemm.cuh (64 x 64 block
// tiles, 4 x 4 outputs per thread). With beta == 0, c is only written, as in BLAS.
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

// Grid: (ceil(n / 64), ceil(m / 64)), GEMM_THREADS threads. op(a): (m, k), op(b): (k, n) -> c: (m, n).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) sgemm(SgemmParams p) {
    // op(a)(r, kk) and op(b)(kk, col) as strided views of the stored matrices.
    const StridedSource a = p.trans_a ? StridedSource{p.a, 1, p.m, false} : StridedSource{p.a, p.k, 1, true};
    const StridedSource b = p.trans_b ? StridedSource{p.b, 1, p.k, true} : StridedSource{p.b, p.n, 1, false};
    const uint32_t m0 = blockIdx.y * GEMM_TILE_M, n0 = blockIdx.x * GEMM_TILE_N;
    float acc[GEMM_REG][GEMM_REG];
    tiled_gemm(a, b, p.m, p.n, m0, n0, 0, p.k, acc);
#pragma unroll
    for (int i = 0; i < GEMM_REG; ++i) {
        const uint32_t row = m0 + gemm_tile_row(i);
#pragma unroll
        for (int j = 0; j < GEMM_REG; ++j) {
            const uint32_t col = n0 + gemm_tile_col(j);
            if (row < p.m && col < p.n) {
                float* out = p.c + row * p.n + col;
                *out = p.beta == 0.0f ? p.alpha * acc[i][j] : p.alpha * acc[i][j] + p.beta * *out;
            }
        }
    }
}
EMU_KERNEL(sgemm, SgemmParams)

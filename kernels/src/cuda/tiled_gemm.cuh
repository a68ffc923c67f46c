// tiled_gemm.cuh: the shared-memory tiled matrix product that the GEMM (gemm.cu) and the three
// convolution passes (conv2d.cu, implicit GEMM) are built from.
//
// A block of GEMM_THREADS = 256 threads (16 x 16: tx = tid % 16, ty = tid / 16) computes a
// Tile::BM x Tile::BN tile of C = A B (A: (m, k), B: (k, n)), GEMM_TILE_K = 8 deep per step:
// - GemmLarge, 128 x 128: each thread holds 8 x 8 outputs, as 2 x 2 sub-tiles of 4 x 4, rows
//   4 ty .. 4 ty + 3 and 64 + 4 ty .. 64 + 4 ty + 3 of the block tile, columns likewise with tx.
//   Per k it reads its 8 A values and 8 B values from shared memory as four float4 and does 64
//   multiply-adds. The A reads of a warp hit 2 addresses (broadcasts), the B reads 16
//   consecutive float4 (each quarter-warp phase 128 consecutive bytes): no bank conflicts.
// - GemmSmall, 64 x 64: 4 x 4 outputs per thread, rows 4 ty .. 4 ty + 3 (one sub-tile), for
//   products whose output has too few 128 x 128 tiles to fill the GPU (the FC layers).
// The shared tiles are k-major (as[k][row], bs[k][col]), rows padded by 4 floats: 16-byte
// aligned for the float4 reads, and the transposing stores of k-contiguous sources fall in 32
// different banks.
//
// Two shared-memory stages: while the block computes on stage s, each thread holds in registers
// the global values of the next k step (loaded before the compute, so the loads are in flight
// during it) and stores them into stage s ^ 1 after it; one barrier per k step.
//
// A and B are *sources*: the GEMM reads element (o, k), o the row of A or the column of B, k the
// inner index. A source splits the index arithmetic so that the part that depends on o alone is
// done once per thread, before the k loop (for a convolution: the decomposition of the output
// pixel), and only the part that depends on k runs per step:
//
//   struct Source {
//       static constexpr bool k_contiguous;  // neighbouring k are neighbours in memory
//       struct Outer;                        // what a fixed o needs
//       struct Inner;                        // what one k needs
//       Outer outer(uint32_t o) const;
//       Inner inner(uint32_t k) const;
//       void next(Inner& i) const;           // i becomes the Inner of k + 1
//       float load(const Outer&, const Inner&) const;  // the element; called only in range
//   };
//
// The loaders walk the contiguous axis fastest across threads, so that a warp's loads coalesce:
// with k_contiguous a thread loads one k (tid % 8) of several o (tid / 8 + 32 j), so its Outers
// are fixed and one Inner per step serves all its loads; otherwise a thread loads one o
// (tid % BM) at several consecutive k, one Outer, and one inner() and a few next() per step.
// Elements outside the matrices (o >= m or n, k >= k_end) are zeros.
//
// Every output sums its k products in increasing k, one rounding per multiply-add (NVRTC
// contracts acc += a * b into an FFMA), whatever the tile.
#pragma once

#include "common.cuh"

#define GEMM_THREADS 256
#define GEMM_TILE_K 8
#define GEMM_SMEM_PAD 4  // floats after each shared tile row

// Blocks of the large tile per multiprocessor that its kernels' __launch_bounds__ ask for. Two
// (so at most 128 registers a thread, 16 warps per multiprocessor) where ptxas fits them in 128
// registers without spilling: sm_90, the H100. sm_80's ptxas wants about 137 and spills up to
// 190 bytes at 128, so there they ask for one block (8 warps per multiprocessor; ptxas then
// takes 128 to 211 registers, no spills).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define GEMM_LARGE_MIN_BLOCKS 1
#else
#define GEMM_LARGE_MIN_BLOCKS 2
#endif

// A block tile of BM x BN outputs; each thread holds RM x RN of them.
template <uint32_t BM_, uint32_t BN_>
struct GemmTile {
    static constexpr uint32_t BM = BM_, BN = BN_;
    static constexpr uint32_t RM = BM / 16, RN = BN / 16;
    static_assert(RM % 4 == 0 && RN % 4 == 0, "register tiles are made of 4 x 4 sub-tiles");
};
using GemmLarge = GemmTile<128, 128>;
using GemmSmall = GemmTile<64, 64>;

// The block-tile row of this thread's register row i (in 4-row groups, group g at 64 g + 4 ty),
// and the column of its register column j (the same with tx).
__device__ __forceinline__ uint32_t gemm_tile_row(uint32_t i) { return (i / 4) * 64 + (threadIdx.x / 16) * 4 + i % 4; }
__device__ __forceinline__ uint32_t gemm_tile_col(uint32_t j) { return (j / 4) * 64 + (threadIdx.x % 16) * 4 + j % 4; }

// n / d and n % d for a divisor d fixed over a kernel, without a division instruction: the
// round-up method of Granlund and Montgomery, q = (umulhi(n, mul) + n) >> shift with
// shift = ceil(log2 d) and mul = floor(2^32 (2^shift - d) / d) + 1, exact for every 32-bit n
// and every d in 1..=2^31.
struct FastDiv {
    uint32_t d, mul, shift;
    __device__ __forceinline__ explicit FastDiv(uint32_t divisor) : d(divisor), mul(0), shift(0) {
        while ((1ull << shift) < divisor) ++shift;
        mul = (uint32_t)(((1ull << 32) * ((1ull << shift) - divisor)) / divisor) + 1;
    }
    __device__ __forceinline__ uint32_t div(uint32_t n) const {
        return (uint32_t)(((uint64_t)__umulhi(n, mul) + n) >> shift);
    }
};

// A row-major matrix used as stored or transposed: element (o, k) at p[o * o_stride + k * k_stride].
template <bool KContiguous>
struct StridedSource {
    static constexpr bool k_contiguous = KContiguous;
    const float* p;
    uint32_t o_stride, k_stride;
    struct Outer {
        uint32_t offset;
    };
    struct Inner {
        uint32_t offset;
    };
    __device__ __forceinline__ Outer outer(uint32_t o) const { return {o * o_stride}; }
    __device__ __forceinline__ Inner inner(uint32_t k) const { return {k * k_stride}; }
    __device__ __forceinline__ void next(Inner& i) const { i.offset += k_stride; }
    __device__ __forceinline__ float load(const Outer& o, const Inner& i) const { return p[o.offset + i.offset]; }
};

// Copies one operand's BO x GEMM_TILE_K slices into a k-major shared tile, in two halves per k
// step: fetch (global memory to registers) and store (registers to shared memory).
template <class Source, uint32_t BO>
struct TileLoader {
    static constexpr uint32_t PER_THREAD = BO * GEMM_TILE_K / GEMM_THREADS;
    static constexpr uint32_t OUTERS = Source::k_contiguous ? PER_THREAD : 1;
    static_assert(GEMM_THREADS % BO == 0 && BO % (GEMM_THREADS / GEMM_TILE_K) == 0, "loader layout");

    typename Source::Outer outer[OUTERS];
    uint32_t outers_in;  // outer[j] is inside the matrix for j < outers_in (one register, not OUTERS)
    uint32_t kk0;        // this thread's first k within a step

    // The tile at o0 of a matrix with `bound` rows (A) or columns (B).
    __device__ __forceinline__ TileLoader(const Source& s, uint32_t o0, uint32_t bound) {
        const uint32_t tid = threadIdx.x;
        kk0 = Source::k_contiguous ? tid % GEMM_TILE_K : (tid / BO) * PER_THREAD;
        outers_in = 0;
#pragma unroll
        for (uint32_t j = 0; j < OUTERS; ++j) {
            const uint32_t o = Source::k_contiguous ? o0 + tid / GEMM_TILE_K + j * (GEMM_THREADS / GEMM_TILE_K)
                                                    : o0 + tid % BO;
            outer[j] = s.outer(o);
            outers_in += o < bound;  // the o increase with j
        }
    }

    // The slice of the step at k0 into v, zeros at k >= k_end and outside the matrix.
    __device__ __forceinline__ void fetch(const Source& s, uint32_t k0, uint32_t k_end, float (&v)[PER_THREAD]) const {
        const uint32_t k = k0 + kk0;
        typename Source::Inner in = s.inner(k);
        if constexpr (Source::k_contiguous) {
#pragma unroll
            for (uint32_t j = 0; j < PER_THREAD; ++j) v[j] = j < outers_in && k < k_end ? s.load(outer[j], in) : 0.0f;
        } else {
#pragma unroll
            for (uint32_t j = 0; j < PER_THREAD; ++j) {
                if (j > 0) s.next(in);
                v[j] = outers_in > 0 && k + j < k_end ? s.load(outer[0], in) : 0.0f;
            }
        }
    }

    // v, as fetched, into the shared tile (GEMM_TILE_K rows of BO + GEMM_SMEM_PAD floats).
    __device__ __forceinline__ void store(float (*tile)[BO + GEMM_SMEM_PAD], const float (&v)[PER_THREAD]) const {
        const uint32_t tid = threadIdx.x;
#pragma unroll
        for (uint32_t j = 0; j < PER_THREAD; ++j) {
            if constexpr (Source::k_contiguous) {
                tile[kk0][tid / GEMM_TILE_K + j * (GEMM_THREADS / GEMM_TILE_K)] = v[j];
            } else {
                tile[kk0 + j][tid % BO] = v[j];
            }
        }
    }
};

// The two stages of a tile's shared-memory operands. One copy per tile size and kernel, shared
// by every tiled_gemm instantiation in that kernel (sgemm has one per transpose pair).
template <class Tile>
struct GemmSmem {
    __align__(16) float as[2][GEMM_TILE_K][Tile::BM + GEMM_SMEM_PAD];
    __align__(16) float bs[2][GEMM_TILE_K][Tile::BN + GEMM_SMEM_PAD];
};
template <class Tile>
__device__ __forceinline__ GemmSmem<Tile>& gemm_smem() {
    __shared__ GemmSmem<Tile> smem;
    return smem;
}

// Four consecutive floats of a shared tile row, as one 16-byte load (p 16-byte aligned).
__device__ __forceinline__ float4 load_float4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// acc = A[m0.., k_begin..k_end) B[k_begin..k_end), n0..) for this block's tile (m0, n0), A: (m, k),
// B: (k, n); acc is this thread's Tile::RM x Tile::RN tile (see gemm_tile_row and gemm_tile_col),
// overwritten. Every thread of the block must call it (it meets at barriers).
template <class Tile, class ASource, class BSource>
__device__ __forceinline__ void tiled_gemm(const ASource& a, const BSource& b, uint32_t m, uint32_t n,
                                           uint32_t m0, uint32_t n0, uint32_t k_begin, uint32_t k_end,
                                           float (&acc)[Tile::RM][Tile::RN]) {
    constexpr uint32_t BM = Tile::BM, BN = Tile::BN, RM = Tile::RM, RN = Tile::RN;
    auto& as = gemm_smem<Tile>().as;
    auto& bs = gemm_smem<Tile>().bs;
    const TileLoader<ASource, BM> a_loader(a, m0, m);
    const TileLoader<BSource, BN> b_loader(b, n0, n);
    float a_next[TileLoader<ASource, BM>::PER_THREAD], b_next[TileLoader<BSource, BN>::PER_THREAD];
    const uint32_t row0 = (threadIdx.x / 16) * 4, col0 = (threadIdx.x % 16) * 4;
#pragma unroll
    for (uint32_t i = 0; i < RM; ++i) {
#pragma unroll
        for (uint32_t j = 0; j < RN; ++j) acc[i][j] = 0.0f;
    }
    if (k_begin >= k_end) return;  // the same for every thread of the block: no barrier is skipped

    a_loader.fetch(a, k_begin, k_end, a_next);
    b_loader.fetch(b, k_begin, k_end, b_next);
    a_loader.store(as[0], a_next);
    b_loader.store(bs[0], b_next);
    __syncthreads();
    uint32_t s = 0;
    for (uint32_t k0 = k_begin; k0 < k_end; k0 += GEMM_TILE_K) {
        const bool more = k0 + GEMM_TILE_K < k_end;
        if (more) {  // the next step's values, in flight while this one computes
            a_loader.fetch(a, k0 + GEMM_TILE_K, k_end, a_next);
            b_loader.fetch(b, k0 + GEMM_TILE_K, k_end, b_next);
        }
#pragma unroll
        for (uint32_t kk = 0; kk < GEMM_TILE_K; ++kk) {
            float av[RM], bv[RN];
#pragma unroll
            for (uint32_t g = 0; g < RM / 4; ++g) {
                const float4 v = load_float4(&as[s][kk][g * 64 + row0]);
                av[4 * g] = v.x, av[4 * g + 1] = v.y, av[4 * g + 2] = v.z, av[4 * g + 3] = v.w;
            }
#pragma unroll
            for (uint32_t g = 0; g < RN / 4; ++g) {
                const float4 v = load_float4(&bs[s][kk][g * 64 + col0]);
                bv[4 * g] = v.x, bv[4 * g + 1] = v.y, bv[4 * g + 2] = v.z, bv[4 * g + 3] = v.w;
            }
#pragma unroll
            for (uint32_t i = 0; i < RM; ++i) {
#pragma unroll
                for (uint32_t j = 0; j < RN; ++j) acc[i][j] += av[i] * bv[j];
            }
        }
        if (more) {  // stage s ^ 1 was last read in the previous step, before its closing barrier
            a_loader.store(as[s ^ 1], a_next);
            b_loader.store(bs[s ^ 1], b_next);
        }
        __syncthreads();  // the stores are visible, and stage s is free, before the next step
        s ^= 1;
    }
}

// tc_gemm.cuh: the tensor-core tiled matrix product (TF32 or BF16 operands, FP32 accumulators)
// that the tensor-core GEMMs (gemm/gemm_tc.cu) instantiate, and that the implicit-GEMM
// convolutions can instantiate with their own operand views, as tiled_gemm.cuh serves the FP32
// kernels.
//
// A block of TC_THREADS = 128 threads (4 warps, 2 x 2) computes a Tile::BM x Tile::BN tile of
// C = A B (A: (m, k), B: (k, n)), Tile::BK deep per step; each warp a WM x WN = BM/2 x BN/2 tile
// as MT x NT mma tiles of 16 x 8 (mma.sync m16n8k8 TF32 or m16n8k16 BF16, mma.cuh).
//
// Shared memory: Tile::STAGES stages, each an A tile and a B tile, filled by cp.async and read by
// ldmatrix (or, for TF32 operands stored m- or n-major, by 32-bit loads: ldmatrix.trans moves
// 16-bit elements, so it cannot transpose 32-bit ones). A step is 128 bytes of k (BK = 32 TF32 or
// 64 BF16), so that a k-major row is 128 bytes, the 32 banks once. Each operand tile is stored
//   - k-major (rows o, the m or n index, of BK elements) when the view's neighbouring k are
//     neighbours in memory (View::k_major): A as stored, B^T as stored;
//   - otherwise o-major (rows k of BM or BN elements): A^T, B as stored, the im2col views.
// Rows are made of 16-byte chunks; chunk c of row r sits at c ^ swizzle(r) (an XOR permutation
// within its aligned group of 8 chunks), so that:
//   - the cp.async stores of 8 consecutive threads (16 bytes each, one row) fill 8 distinct 16-byte
//     bank groups;
//   - ldmatrix reads 8 rows of one chunk column: swizzle(r) = r % 8 spreads them over the 8 groups;
//   - the 32-bit TF32 fragment loads of an o-major tile read rows t and t + 4 (t < 4) at chunks
//     (o0 + g) / 4, g < 8: swizzle(r) = 2r % 8 spreads the 4 rows x 2 chunks over the 8 groups.
// Bank conflicts are thereby absent from every shared access of the main loop.
//
// The pipeline: STAGES - 1 steps are in flight while one is computed. Step s waits for its own
// cp.async group (cp_async_wait<STAGES - 2>), meets the block at one barrier (its data is then
// visible to every thread, and every warp has finished step s - 1, whose stage is refilled next),
// issues the copies of step s + STAGES - 1 into that stage, then computes on its own.
//
// Operands are *views*: the product reads element (o, k) of A (o = row) and B (o = column) through
//
//   struct View {
//       using Elem = float;              // or bf16_t: what memory holds (the tile's Prec::Elem)
//       static constexpr bool k_major;   // neighbouring k are neighbours in memory
//       static constexpr bool vectors;   // in range, the CHUNK elements of an aligned chunk along
//                                        // the contiguous axis are contiguous in memory
//       struct Outer;                    // what a fixed o needs
//       struct Inner;                    // what one k needs
//       Outer outer(uint32_t o) const;
//       Inner inner(uint32_t k) const;   // may be called with k past the end (must not read)
//       void next(Inner& i) const;       // i becomes the Inner of k + 1
//       const Elem* address(const Outer&, const Inner&) const;  // nullptr: the element is 0
//   };
//
// as tiled_gemm.cuh's sources split the index arithmetic: per step a thread computes one Inner
// per k it copies (inner() once, then next()) and one Outer per o (recomputed each step rather
// than kept: 8 of them would hold 8 registers or more across the main loop).
// A chunk whose elements are all in range, from a `vectors` view, at a 16-byte aligned address,
// is one 16-byte cp.async; any other chunk goes element by element: a 4-byte cp.async for TF32,
// a plain load and store for BF16 (cp.async copies 4 bytes at least), zeros stored directly.
// Elements outside the matrices (o >= m or n, k >= k_end) are zeros.
//
// TF32 operands are rounded in registers after the fragment loads (cvt.rna.tf32.f32), so the
// views hold plain FP32. Every output sums its products in increasing k: the k order of the
// steps, of the mma within a step, and of the mma itself (see cuda_emu.h for the model).
#pragma once

#include "common.cuh"
#include "mma.cuh"

#define TC_THREADS 128
#define TC_STAGES 3  // shared-memory stages of every tile below

// TF32 operands: FP32 in memory, rounded to TF32 in registers; mma.sync m16n8k8.
struct Tf32 {
    using Elem = float;
    static constexpr uint32_t MMA_K = 8;
    static constexpr uint32_t CHUNK = 4;  // elements in 16 bytes
    static constexpr uint32_t BK = 32;    // k of a step: 128 bytes
};

// BF16 operands: BF16 in memory; mma.sync m16n8k16.
struct Bf16 {
    using Elem = bf16_t;
    static constexpr uint32_t MMA_K = 16;
    static constexpr uint32_t CHUNK = 8;
    static constexpr uint32_t BK = 64;
};

// A block tile of BM x BN outputs in STAGES shared-memory stages.
template <class Prec_, uint32_t BM_, uint32_t BN_, uint32_t STAGES_>
struct TcTile {
    using Prec = Prec_;
    using Elem = typename Prec::Elem;
    static constexpr uint32_t BM = BM_, BN = BN_, BK = Prec::BK, STAGES = STAGES_;
    static constexpr uint32_t WM = BM / 2, WN = BN / 2;  // the warp tile (2 x 2 warps)
    static constexpr uint32_t MT = WM / 16, NT = WN / 8;  // mma tiles per warp
    static constexpr uint32_t A_BYTES = BM * BK * sizeof(Elem), B_BYTES = BN * BK * sizeof(Elem);
    static constexpr uint32_t STAGE_BYTES = A_BYTES + B_BYTES;
    static constexpr uint32_t SMEM_BYTES = STAGES * STAGE_BYTES;
    static_assert(NT % 2 == 0 && BM % 64 == 0 && BN % 64 == 0, "warp tiles of 32 x 32 at least");
};
// 128 x 128 (a 64 x 64 tile per warp: 8 ldmatrix.x4 feed 32 mma per k step) in 3 stages of 32 KiB:
// 96 KiB, two blocks per H100 multiprocessor (228 KiB), one per A100 one (164 KiB).
using TcTf32Large = TcTile<Tf32, 128, 128, TC_STAGES>;
using TcBf16Large = TcTile<Bf16, 128, 128, TC_STAGES>;
// 64 x 64 for outputs with too few large tiles to fill the GPU: 3 stages of 16 KiB.
using TcTf32Small = TcTile<Tf32, 64, 64, TC_STAGES>;
using TcBf16Small = TcTile<Bf16, 64, 64, TC_STAGES>;

// One operand's tile in one stage: ROWS rows of ROW_BYTES (see the layout above).
template <class Prec, bool KMajor, uint32_t BO>
struct TcSmemTile {
    using Elem = typename Prec::Elem;
    static constexpr uint32_t ROW_ELEMS = KMajor ? Prec::BK : BO;
    static constexpr uint32_t ROWS = KMajor ? BO : Prec::BK;
    static constexpr uint32_t ROW_CHUNKS = ROW_ELEMS / Prec::CHUNK;
    static constexpr uint32_t ROW_BYTES = ROW_ELEMS * sizeof(Elem);
    static_assert(ROW_CHUNKS % 8 == 0, "the swizzle permutes aligned groups of 8 chunks");
    // TF32 o-major tiles are read by 32-bit loads of rows t and t + 4; every other tile by ldmatrix.
    static constexpr bool SCALAR_READS = !KMajor && sizeof(Elem) == 4;
    __device__ static __forceinline__ uint32_t swizzle(uint32_t row) { return (SCALAR_READS ? 2 * row : row) % 8; }
    // Byte offset of chunk c of row `row`, and of element e of the row.
    __device__ static __forceinline__ uint32_t chunk_offset(uint32_t row, uint32_t c) {
        return row * ROW_BYTES + (c ^ swizzle(row)) * 16;
    }
    __device__ static __forceinline__ uint32_t offset(uint32_t row, uint32_t e) {
        return chunk_offset(row, e / Prec::CHUNK) + (e % Prec::CHUNK) * (uint32_t)sizeof(Elem);
    }
};

__device__ __forceinline__ void store_zero16(unsigned char* dst) {
    uint32_t* d = reinterpret_cast<uint32_t*>(dst);
    d[0] = 0u, d[1] = 0u, d[2] = 0u, d[3] = 0u;
}

// One element from global memory to shared memory: a 4-byte cp.async (TF32), or a load and a
// store (BF16: cp.async copies 4 bytes at least). A null source stores a zero.
__device__ __forceinline__ void tc_copy_element(unsigned char* dst, const float* src) {
    if (src) cp_async_4(dst, src, 4);
    else *reinterpret_cast<float*>(dst) = 0.0f;
}
__device__ __forceinline__ void tc_copy_element(unsigned char* dst, const bf16_t* src) {
    *reinterpret_cast<bf16_t*>(dst) = src ? *src : (bf16_t)0;
}

__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15) == 0; }

// Copies one operand's BO x BK slice of a step into its shared tile, as cp.async and stores.
//   k-major: this thread's chunk column c = tid % 8 (k c CHUNK ..), rows (o) tid / 8 + 16 j;
//   o-major: its chunk column c = tid % ROW_CHUNKS (o c CHUNK ..), PER_THREAD consecutive rows (k)
//            from (tid / ROW_CHUNKS) PER_THREAD,
// so that a warp's copies read whole 128-byte lines (or more) of a contiguous operand.
template <class Prec, class View, uint32_t BO>
struct TcLoader {
    using Elem = typename Prec::Elem;
    using Smem = TcSmemTile<Prec, View::k_major, BO>;
    static constexpr uint32_t CHUNK = Prec::CHUNK;
    static constexpr uint32_t PER_THREAD = BO * Prec::BK / CHUNK / TC_THREADS;
    static constexpr uint32_t OUTERS = View::k_major ? PER_THREAD : CHUNK;  // o values a thread copies
    static constexpr uint32_t O_STEP = View::k_major ? 16 : 1;               // between them
    static_assert(PER_THREAD * TC_THREADS * CHUNK == BO * Prec::BK, "loader layout");
    static_assert(View::k_major || TC_THREADS % Smem::ROW_CHUNKS == 0, "loader layout");

    uint32_t o_first;    // this thread's first o; the others follow O_STEP apart
    uint32_t outers_in;  // how many of its OUTERS o values are inside the matrix
    uint32_t col, row0;  // this thread's chunk column and first row

    // The tile at o0 of a matrix with `bound` rows (A) or columns (B).
    __device__ __forceinline__ TcLoader(uint32_t o0, uint32_t bound) {
        const uint32_t tid = threadIdx.x;
        col = View::k_major ? tid % 8 : tid % Smem::ROW_CHUNKS;
        row0 = View::k_major ? tid / 8 : (tid / Smem::ROW_CHUNKS) * PER_THREAD;
        o_first = View::k_major ? o0 + row0 : o0 + col * CHUNK;
        outers_in = o_first >= bound ? 0 : min((bound - o_first + O_STEP - 1) / O_STEP, OUTERS);
    }

    // Issues the copies of the step at k0 (elements k >= k_end are zeros) into `tile`.
    __device__ __forceinline__ void fill(unsigned char* tile, const View& v, uint32_t k0, uint32_t k_end) const {
        if constexpr (View::k_major) {
            const uint32_t k = k0 + col * CHUNK;
            const typename View::Inner in = v.inner(k);
#pragma unroll
            for (uint32_t j = 0; j < PER_THREAD; ++j) {
                unsigned char* dst = tile + Smem::chunk_offset(row0 + 16 * j, col);
                if (j >= outers_in || k >= k_end) {
                    store_zero16(dst);
                    continue;
                }
                const typename View::Outer out = v.outer(o_first + 16 * j);
                if (View::vectors && k + CHUNK <= k_end) {
                    const Elem* src = v.address(out, in);
                    if (src && aligned16(src)) {
                        cp_async_16(dst, src, 16);
                        continue;
                    }
                }
                typename View::Inner e = in;
#pragma unroll
                for (uint32_t x = 0; x < CHUNK; ++x) {
                    if (x > 0) v.next(e);
                    tc_copy_element(dst + x * sizeof(Elem), k + x < k_end ? v.address(out, e) : nullptr);
                }
            }
        } else {
            const uint32_t k = k0 + row0;
            typename View::Inner in = v.inner(k);
#pragma unroll
            for (uint32_t j = 0; j < PER_THREAD; ++j) {
                if (j > 0) v.next(in);
                unsigned char* dst = tile + Smem::chunk_offset(row0 + j, col);
                if (outers_in == 0 || k + j >= k_end) {
                    store_zero16(dst);
                    continue;
                }
                if (View::vectors && outers_in == CHUNK) {
                    const Elem* src = v.address(v.outer(o_first), in);
                    if (src && aligned16(src)) {
                        cp_async_16(dst, src, 16);
                        continue;
                    }
                }
#pragma unroll
                for (uint32_t x = 0; x < CHUNK; ++x) {
                    const Elem* src = x < outers_in ? v.address(v.outer(o_first + x), in) : nullptr;
                    tc_copy_element(dst + x * sizeof(Elem), src);
                }
            }
        }
    }
};

// The position of this thread's accumulator acc[i][j][r] in the block tile: row
// warp_m WM + 16 i + g + 8 (r / 2), column warp_n WN + 8 j + 2 t + r % 2 (the mma's c layout).
template <class Tile>
__device__ __forceinline__ uint32_t tc_row(uint32_t i, uint32_t r) {
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    return (warp % 2) * Tile::WM + 16 * i + lane / 4 + 8 * (r / 2);
}
template <class Tile>
__device__ __forceinline__ uint32_t tc_col(uint32_t j, uint32_t r) {
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    return (warp / 2) * Tile::WN + 8 * j + 2 * (lane % 4) + r % 2;
}

// A fragments of mma k-slice kk (k kk MMA_K ..) for rows r0 .. r0 + 15 of the A tile.
template <class Tile, bool KMajor>
__device__ __forceinline__ void tc_load_a(uint32_t (&a)[4], const unsigned char* tile, uint32_t r0, uint32_t kk) {
    using Smem = TcSmemTile<typename Tile::Prec, KMajor, Tile::BM>;
    const uint32_t lane = threadIdx.x % 32, q = lane / 8, rr = lane % 8;
    if constexpr (KMajor) {
        // Matrices (rows 0-7, k 0-3|0-7), (rows 8-15, same k), (rows 0-7, next k), (rows 8-15, next k).
        ldmatrix_x4(a, tile + Smem::chunk_offset(r0 + (q & 1) * 8 + rr, 2 * kk + q / 2));
    } else if constexpr (Smem::SCALAR_READS) {
        const uint32_t g = lane / 4, t = lane % 4, k = kk * 8 + t;
        a[0] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k, r0 + g));
        a[1] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k, r0 + g + 8));
        a[2] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k + 4, r0 + g));
        a[3] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k + 4, r0 + g + 8));
    } else {
        // Transposed 8 x 8 matrices (k 0-7, rows 0-7), (k 0-7, rows 8-15), (k 8-15, ...), (k 8-15, ...).
        ldmatrix_x4_trans(a, tile + Smem::chunk_offset(kk * 16 + (q / 2) * 8 + rr, (r0 + (q & 1) * 8) / 8));
    }
}

// B fragments of mma k-slice kk for columns c0 .. c0 + 15 of the B tile: two n8 tiles, b0 and b1.
template <class Tile, bool KMajor>
__device__ __forceinline__ void tc_load_b(uint32_t (&b0)[2], uint32_t (&b1)[2], const unsigned char* tile, uint32_t c0,
                                          uint32_t kk) {
    using Smem = TcSmemTile<typename Tile::Prec, KMajor, Tile::BN>;
    const uint32_t lane = threadIdx.x % 32, q = lane / 8, rr = lane % 8;
    uint32_t r[4];
    if constexpr (KMajor) {
        // Matrices (columns 0-7, k), (columns 0-7, next k), (columns 8-15, k), (columns 8-15, next k).
        ldmatrix_x4(r, tile + Smem::chunk_offset(c0 + (q / 2) * 8 + rr, 2 * kk + (q & 1)));
    } else if constexpr (Smem::SCALAR_READS) {
        const uint32_t g = lane / 4, t = lane % 4, k = kk * 8 + t;
        r[0] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k, c0 + g));
        r[1] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k + 4, c0 + g));
        r[2] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k, c0 + 8 + g));
        r[3] = *reinterpret_cast<const uint32_t*>(tile + Smem::offset(k + 4, c0 + 8 + g));
    } else {
        // Transposed (k 0-7, columns 0-7), (k 8-15, columns 0-7), (k 0-7, columns 8-15), (k 8-15, ...).
        ldmatrix_x4_trans(r, tile + Smem::chunk_offset(kk * 16 + (q & 1) * 8 + rr, (c0 + (q / 2) * 8) / 8));
    }
    b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
}

// The operand registers of a TF32 mma, rounded (FP32 bits in, TF32 bits out).
template <uint32_t N>
__device__ __forceinline__ void tc_round_tf32(uint32_t (&r)[N]) {
#pragma unroll
    for (uint32_t i = 0; i < N; ++i) r[i] = tf32_bits(__uint_as_float(r[i]));
}

// acc += the product of one stage's tiles, for this thread's warp: per mma k-slice, the warp's MT
// A fragments, then the B fragments two n8 tiles at a time, each pair used at once (4 registers
// live rather than 2 NT).
template <class Tile, bool AKMajor, bool BKMajor>
__device__ __forceinline__ void tc_compute_stage(const unsigned char* a_tile, const unsigned char* b_tile,
                                                 float (&acc)[Tile::MT][Tile::NT][4]) {
    using Prec = typename Tile::Prec;
    constexpr bool TF32 = sizeof(typename Prec::Elem) == 4;
    const uint32_t warp = threadIdx.x / 32, wm = (warp % 2) * Tile::WM, wn = (warp / 2) * Tile::WN;
#pragma unroll
    for (uint32_t kk = 0; kk < Tile::BK / Prec::MMA_K; ++kk) {
        uint32_t a[Tile::MT][4];
#pragma unroll
        for (uint32_t i = 0; i < Tile::MT; ++i) {
            tc_load_a<Tile, AKMajor>(a[i], a_tile, wm + 16 * i, kk);
            if constexpr (TF32) tc_round_tf32(a[i]);
        }
#pragma unroll
        for (uint32_t j = 0; j < Tile::NT; j += 2) {
            uint32_t b0[2], b1[2];
            tc_load_b<Tile, BKMajor>(b0, b1, b_tile, wn + 8 * j, kk);
            if constexpr (TF32) {
                tc_round_tf32(b0);
                tc_round_tf32(b1);
            }
#pragma unroll
            for (uint32_t i = 0; i < Tile::MT; ++i) {
                if constexpr (TF32) {
                    mma_tf32(acc[i][j], a[i], b0);
                    mma_tf32(acc[i][j + 1], a[i], b1);
                } else {
                    mma_bf16(acc[i][j], a[i], b0);
                    mma_bf16(acc[i][j + 1], a[i], b1);
                }
            }
        }
    }
}

// acc = A[m0.., k_begin..k_end) B[k_begin..k_end), n0..) for this block's tile (m0, n0); A: (m, k),
// B: (k, n) through views of Tile::Prec::Elem; acc is this thread's part (tc_row, tc_col),
// overwritten. `smem` is Tile::SMEM_BYTES of 16-byte aligned shared memory. Every thread of the
// block must call it (it meets at barriers); it leaves no copy in flight.
template <class Tile, class AView, class BView>
__device__ __forceinline__ void tc_gemm(const AView& a, const BView& b, uint32_t m, uint32_t n, uint32_t m0, uint32_t n0,
                                        uint32_t k_begin, uint32_t k_end, unsigned char* smem,
                                        float (&acc)[Tile::MT][Tile::NT][4]) {
    using Prec = typename Tile::Prec;
    constexpr uint32_t BK = Tile::BK, STAGES = Tile::STAGES;
#pragma unroll
    for (uint32_t i = 0; i < Tile::MT; ++i) {
#pragma unroll
        for (uint32_t j = 0; j < Tile::NT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    }
    if (k_begin >= k_end) return;  // the same for every thread of the block: no barrier is skipped
    const TcLoader<Prec, AView, Tile::BM> a_loader(m0, m);
    const TcLoader<Prec, BView, Tile::BN> b_loader(n0, n);
    const uint32_t steps = (k_end - k_begin + BK - 1) / BK;
    auto stage = [&](uint32_t s) { return smem + (s % STAGES) * Tile::STAGE_BYTES; };

#pragma unroll
    for (uint32_t s = 0; s + 1 < STAGES; ++s) {
        if (s < steps) {
            a_loader.fill(stage(s), a, k_begin + s * BK, k_end);
            b_loader.fill(stage(s) + Tile::A_BYTES, b, k_begin + s * BK, k_end);
        }
        cp_async_commit();  // one group per step, empty past the end, so the counts below hold
    }
    for (uint32_t s = 0; s < steps; ++s) {
        cp_async_wait<STAGES - 2>();  // step s's group (groups 0 .. s + STAGES - 2 are committed)
        __syncthreads();              // its copies are visible; step s - 1's stage is free
        const uint32_t next = s + STAGES - 1;
        if (next < steps) {
            a_loader.fill(stage(next), a, k_begin + next * BK, k_end);
            b_loader.fill(stage(next) + Tile::A_BYTES, b, k_begin + next * BK, k_end);
        }
        cp_async_commit();
        tc_compute_stage<Tile, AView::k_major, BView::k_major>(stage(s), stage(s) + Tile::A_BYTES, acc);
    }
    cp_async_wait<0>();  // only empty groups remain; retire them
}

// A row-major matrix used as stored or transposed: element (o, k) at p[o * o_stride + k * k_stride].
template <class T, bool KMajor>
struct TcStridedView {
    using Elem = T;
    static constexpr bool k_major = KMajor, vectors = true;
    const T* p;
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
    __device__ __forceinline__ const T* address(const Outer& o, const Inner& i) const { return p + o.offset + i.offset; }
};

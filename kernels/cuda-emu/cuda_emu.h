// cuda_emu.h: just enough of CUDA for our kernels to compile as host C++ (g++, -std=c++20) and run
// on the CPU, so that every kernel is exercised on machines without a GPU.
//
// A launch runs the grid one block at a time. The threads of a block are real std::threads that
// meet at real barriers, so a missing __syncthreads or a shared-memory race shows up here as it
// would on a GPU. Only one launch runs at a time in a process (a mutex), because `__shared__`
// becomes `static`: one copy of each shared array, reused by block after block.
//
// Supplied: threadIdx, blockIdx, blockDim, gridDim; __global__, __device__, __forceinline__,
// __restrict__, __launch_bounds__, __align__; static __shared__ arrays and dynamic shared memory
// through CUDA_DYNAMIC_SHARED(T, name) (poisoned with 0xFF bytes, a NaN in every float, before
// each block); __syncthreads, __syncwarp, __shfl_sync, __shfl_down_sync, __shfl_xor_sync;
// atomicAdd on float, int and unsigned; __umulhi, rsqrtf, __uint_as_float, __float_as_uint and
// the int/float min and max; __fadd_rn, __fsub_rn, __fmul_rn; float4 (16-byte aligned, as on the
// GPU) and make_float4.
//
// Tensor cores (sm_80's warp-level matrix instructions, for kernels/src/cuda/mma.cuh): the
// warp-collective mma.sync m16n8k8 TF32 and m16n8k16 BF16, ldmatrix (x1/x2/x4, optionally .trans),
// cp.async with its commit and wait groups, and the conversions cvt.rna.tf32.f32 and f32 -> bf16
// (round to nearest even). Their exact semantics and limits are written at each below.
//
// Differences from a GPU that a kernel must not rely on: warps do not run in lockstep (shuffles
// and the warp-collective matrix instructions synchronise the warp, nothing else does); float
// arithmetic is the host's (no FMA contraction unless the compiler picks it).
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned x, y, z;
};

// CUDA's 16-byte vector type (the shared-memory float4 loads of tiled_gemm.cuh).
struct alignas(16) float4 {
    float x, y, z, w;
};

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

namespace cuda_emu {

constexpr unsigned WARP = 32;

// A barrier for a group whose members may leave early (a thread that returns from the kernel):
// as on a GPU, exited threads no longer count, so the others do not wait for them forever.
class Barrier {
  public:
    void reset(unsigned members) {
        live_ = members;
        arrived_ = 0;
    }
    void sync() {
        std::unique_lock<std::mutex> lock(m_);
        const uint64_t gen = gen_;
        if (++arrived_ == live_) {
            release();
        } else {
            cv_.wait(lock, [&] { return gen_ != gen; });
        }
    }
    void leave() {
        std::unique_lock<std::mutex> lock(m_);
        --live_;
        if (arrived_ > 0 && arrived_ == live_) release();
    }
    // The members that have not left.
    unsigned members() {
        std::unique_lock<std::mutex> lock(m_);
        return live_;
    }

  private:
    void release() {
        arrived_ = 0;
        ++gen_;
        cv_.notify_all();
    }
    std::mutex m_;
    std::condition_variable cv_;
    unsigned live_ = 0, arrived_ = 0;
    uint64_t gen_ = 0;
};

// Words (8 bytes each) a thread posts to one warp-collective matrix instruction.
constexpr unsigned COLLECTIVE_WORDS = 8;

// What the threads of the running block share.
struct Launch {
    unsigned threads = 0;
    Barrier block;
    std::unique_ptr<Barrier[]> warps;
    std::vector<uint64_t> exchange;  // one shuffle slot per thread
    std::vector<uint64_t> collective;  // two sets of COLLECTIVE_WORDS words a thread (warp_post)
    std::vector<unsigned char> dynamic_shared;
};

inline Launch* current = nullptr;
inline std::mutex launch_mutex;

// Clears what a thread carries from one block to the next (matrix instructions' state, below).
inline void reset_thread();

inline unsigned linear_tid() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}

inline unsigned warp_size_of(unsigned warp) {
    const unsigned first = warp * WARP;
    return current->threads - first < WARP ? current->threads - first : WARP;
}

inline void reset_block(Launch& l) {
    l.block.reset(l.threads);
    for (unsigned w = 0; w * WARP < l.threads; ++w) l.warps[w].reset(warp_size_of(w));
    std::memset(l.dynamic_shared.data(), 0xFF, l.dynamic_shared.size());
}

// Runs `body` for every block of the grid, the block's threads concurrently.
inline void launch(const std::function<void()>& body, dim3 grid, dim3 block, unsigned shared_bytes) {
    std::lock_guard<std::mutex> guard(launch_mutex);
    Launch l;
    l.threads = block.x * block.y * block.z;
    l.warps = std::make_unique<Barrier[]>((l.threads + WARP - 1) / WARP);
    l.exchange.assign(l.threads, 0);
    l.collective.assign(2 * COLLECTIVE_WORDS * l.threads, 0);
    l.dynamic_shared.assign(shared_bytes, 0);
    current = &l;
    reset_block(l);
    const unsigned blocks = grid.x * grid.y * grid.z;
    // Every thread has left block b before any starts block b + 1 (then shared memory is reset).
    std::barrier end_of_block(static_cast<std::ptrdiff_t>(l.threads), [&]() noexcept { reset_block(l); });
    std::vector<std::thread> pool;
    pool.reserve(l.threads);
    for (unsigned t = 0; t < l.threads; ++t) {
        pool.emplace_back([&, t] {
            blockDim = block;
            gridDim = grid;
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned b = 0; b < blocks; ++b) {
                blockIdx = {b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
                reset_thread();
                body();
                l.warps[t / WARP].leave();
                l.block.leave();
                end_of_block.arrive_and_wait();
            }
        });
    }
    for (auto& th : pool) th.join();
    current = nullptr;
}

inline void* dynamic_shared() { return current->dynamic_shared.data(); }

// A warp shuffle: every lane posts its value, the warp meets, each lane reads its source lane's,
// and the warp meets again before the slots can be overwritten.
template <class T>
T shuffle(T v, int src_lane) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a type wider than 8 bytes");
    const unsigned tid = linear_tid(), warp = tid / WARP;
    uint64_t slot = 0;
    std::memcpy(&slot, &v, sizeof(T));
    current->exchange[tid] = slot;
    current->warps[warp].sync();
    T out = v;
    if (src_lane >= 0 && static_cast<unsigned>(src_lane) < warp_size_of(warp)) {
        std::memcpy(&out, &current->exchange[warp * WARP + src_lane], sizeof(T));
    }
    current->warps[warp].sync();
    return out;
}

}  // namespace cuda_emu

inline void __syncthreads() { cuda_emu::current->block.sync(); }
inline void __syncwarp(unsigned = 0xffffffffu) {
    cuda_emu::current->warps[cuda_emu::linear_tid() / cuda_emu::WARP].sync();
}

template <class T>
T __shfl_sync(unsigned, T v, int src_lane, int = 32) {
    return cuda_emu::shuffle(v, src_lane);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int = 32) {
    return cuda_emu::shuffle(v, static_cast<int>(cuda_emu::linear_tid() % cuda_emu::WARP + delta));
}
template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
    return cuda_emu::shuffle(v, static_cast<int>(cuda_emu::linear_tid() % cuda_emu::WARP) ^ lane_mask);
}

template <class T>
T atomicAdd(T* address, T v) {
    return std::atomic_ref<T>(*address).fetch_add(v);
}

inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
// Round-to-nearest arithmetic that a GPU compiler never fuses into an FMA. The host build targets
// baseline x86-64 (no FMA instructions), so plain operators round each step the same way.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }

// Dynamic shared memory: `extern __shared__ T name[]` on the GPU.
#define CUDA_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(cuda_emu::dynamic_shared())

// Exports kernel `name`, whose one argument is a `Params` struct, to Rust: `emu_<name>` runs a
// launch and `emu_<name>_params_size` lets the Rust side check its struct's size.
#define EMU_KERNEL(name, Params)                                                                \
    extern "C" void emu_##name(dim3 grid, dim3 block, unsigned shared, const void* params) {   \
        Params p;                                                                              \
        std::memcpy(&p, params, sizeof p);                                                     \
        cuda_emu::launch([p] { name(p); }, grid, block, shared);                               \
    }                                                                                          \
    extern "C" size_t emu_##name##_params_size() { return sizeof(Params); }

// ---- Tensor cores: the warp-level matrix instructions of sm_80 (see kernels/src/cuda/mma.cuh) ----
//
// mma.sync and ldmatrix are warp collectives: every lane posts its registers (or its row address)
// into its slot, the warp meets, and each lane computes its own result from the whole warp's
// slots, with the per-lane fragment layouts of the PTX ISA ("Matrix Fragments for mma.m16n8k8",
// "... for mma.m16n8k16 with floating point type", "ldmatrix"). groupID = lane >> 2 and
// threadID_in_group = lane % 4 are written g and t below. A misuse that is undefined behaviour on
// a GPU (a partial warp, a misaligned address, a bad size) aborts the process with a message.
namespace cuda_emu {

[[noreturn]] inline void fail(const char* what, const char* why) {
    std::fprintf(stderr, "cuda_emu: %s: %s\n", what, why);
    std::abort();
}

// Which of its two slot sets the thread's next collective posts to. Two sets, alternating, so that
// a collective needs one meeting of the warp, not two: a lane posts to a set again only in the
// collective after next, and the meeting of the collective in between is not passed before every
// lane has finished reading the set.
inline thread_local unsigned collective_set = 0;

// Posts `n` words for this lane, waits for the whole warp to post, and returns the warp's slots
// (lane i's words at [i * COLLECTIVE_WORDS]); valid until this thread's collective after next.
inline const uint64_t* warp_post(const uint64_t* words, unsigned n, const char* what) {
    const unsigned tid = linear_tid(), warp = tid / WARP;
    if (warp_size_of(warp) != WARP || current->warps[warp].members() != WARP) {
        fail(what, "every lane of a full warp of 32 threads must take part");
    }
    const size_t set = static_cast<size_t>(collective_set) * current->threads;
    std::memcpy(&current->collective[(set + tid) * COLLECTIVE_WORDS], words, n * sizeof(uint64_t));
    collective_set ^= 1;
    current->warps[warp].sync();
    return &current->collective[(set + warp * WARP) * COLLECTIVE_WORDS];
}

inline unsigned lane_id() { return linear_tid() % WARP; }

// cvt.rna.tf32.f32: to TF32 (FP32's sign and 8-bit exponent, 10 of its 23 mantissa bits) rounding
// to nearest with ties away from zero, in a 32-bit container whose 13 low bits are zero. Adding
// half a TF32 unit (0x1000) to the magnitude bits and cutting the low 13 bits is exactly that,
// subnormals included; a carry out of the largest finite values gives infinity, as IEEE rounding
// to nearest does. NaN gives the canonical NaN 0x7FFFFFFF.
inline uint32_t cvt_rna_tf32(float x) {
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFFFFFFu;
    return (u + 0x1000u) & 0xFFFFE000u;
}

// __float2bfloat16_rn (cvt.rn.bf16.f32): the upper 16 bits of FP32, rounded to nearest even;
// overflow gives infinity, NaN the canonical 0x7FFF.
inline uint16_t cvt_rn_bf16(float x) {
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
    return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// BF16 to FP32 is exact: the bits, shifted.
inline float bf16_float(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

// A TF32 operand register as the tensor core reads it: only the TF32 bits (the low 13 are
// ignored, so an FP32 value that was not rounded first is truncated).
inline float tf32_operand(uint64_t reg) { return __uint_as_float(static_cast<uint32_t>(reg) & 0xFFFFE000u); }

// The multiply-add of one output: c + sum over k of a[k] * b[k] in increasing k. The model of the
// tensor core's arithmetic: every product exact (TF32 and BF16 significands have 11 and 8 bits,
// so a product has at most 22 and fits an FP32 significand; only products under FP32's normal
// range would round) and each addition rounded to FP32, nearest even. A GPU's adder may keep
// other intermediate precision or truncate; tests bound the difference by K and FP32's unit
// roundoff instead of expecting these bits.
template <unsigned K>
inline float dot_in_f32(float c, const float (&a)[K], const float (&b)[K]) {
    float acc = c;
    for (unsigned k = 0; k < K; ++k) {
        const float product = a[k] * b[k];
        acc = acc + product;
    }
    return acc;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = a b + c, a (16 x 8), b (8 x 8), c, d
// (16 x 8). Per lane: a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); b0 (t, g),
// b1 (t + 4, g); c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1). d may be c.
inline void mma_m16n8k8_tf32(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
    const uint64_t words[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    const uint64_t* s = warp_post(words, 6, "mma.m16n8k8.tf32");
    float am[16][8], bt[8][8];  // bt[col][k] = b(k, col)
    for (unsigned lane = 0; lane < WARP; ++lane) {
        const uint64_t* r = s + lane * COLLECTIVE_WORDS;
        const unsigned g = lane >> 2, t = lane & 3;
        am[g][t] = tf32_operand(r[0]);
        am[g + 8][t] = tf32_operand(r[1]);
        am[g][t + 4] = tf32_operand(r[2]);
        am[g + 8][t + 4] = tf32_operand(r[3]);
        bt[g][t] = tf32_operand(r[4]);
        bt[g][t + 4] = tf32_operand(r[5]);
    }
    const unsigned g = lane_id() >> 2, t = lane_id() & 3;
    float out[4];
    for (unsigned i = 0; i < 4; ++i) out[i] = dot_in_f32(c[i], am[g + 8 * (i / 2)], bt[2 * t + (i & 1)]);
    std::memcpy(d, out, sizeof out);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: d = a b + c, a (16 x 16), b (16 x 8), c, d
// (16 x 8). Each 32-bit register holds two BF16, the lower-indexed element in the low half. Per
// lane: a0, a1 (g, 2t + i); a2, a3 (g + 8, 2t + i); a4, a5 (g, 2t + 8 + i); a6, a7 (g + 8,
// 2t + 8 + i) for i = 0, 1 (registers a[0..4) hold the pairs in that order); b0, b1 (2t + i, g);
// b2, b3 (2t + 8 + i, g) (registers b[0], b[1]); c as for m16n8k8. d may be c.
inline void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
    const uint64_t words[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    const uint64_t* s = warp_post(words, 6, "mma.m16n8k16.bf16");
    float am[16][16], bt[8][16];  // bt[col][k] = b(k, col)
    for (unsigned lane = 0; lane < WARP; ++lane) {
        const uint64_t* r = s + lane * COLLECTIVE_WORDS;
        const unsigned g = lane >> 2, t = lane & 3;
        for (unsigned i = 0; i < 2; ++i) {
            const unsigned shift = 16 * i;
            am[g][2 * t + i] = bf16_float(static_cast<uint16_t>(r[0] >> shift));
            am[g + 8][2 * t + i] = bf16_float(static_cast<uint16_t>(r[1] >> shift));
            am[g][2 * t + 8 + i] = bf16_float(static_cast<uint16_t>(r[2] >> shift));
            am[g + 8][2 * t + 8 + i] = bf16_float(static_cast<uint16_t>(r[3] >> shift));
            bt[g][2 * t + i] = bf16_float(static_cast<uint16_t>(r[4] >> shift));
            bt[g][2 * t + 8 + i] = bf16_float(static_cast<uint16_t>(r[5] >> shift));
        }
    }
    const unsigned g = lane_id() >> 2, t = lane_id() & 3;
    float out[4];
    for (unsigned i = 0; i < 4; ++i) out[i] = dot_in_f32(c[i], am[g + 8 * (i / 2)], bt[2 * t + (i & 1)]);
    std::memcpy(d, out, sizeof out);
}

// ldmatrix.sync.aligned.m8n8.x{NUM}{.trans}.shared.b16: NUM 8 x 8 matrices of 16-bit elements,
// matrix i's rows at the 16-byte aligned addresses of lanes 8i .. 8i + 7 (the other lanes'
// addresses are not read). r[i] of lane (g, t) holds row g, elements 2t and 2t + 1 of matrix i;
// with .trans, column g, elements 2t and 2t + 1 (that is, rows 2t and 2t + 1 of column g).
template <unsigned NUM, bool TRANS>
inline void ldmatrix(uint32_t* r, const void* row) {
    static_assert(NUM == 1 || NUM == 2 || NUM == 4, "ldmatrix loads 1, 2 or 4 matrices");
    const uint64_t word = reinterpret_cast<uint64_t>(row);
    const uint64_t* s = warp_post(&word, 1, "ldmatrix");
    const unsigned g = lane_id() >> 2, t = lane_id() & 3;
    auto row_of = [&](unsigned i, unsigned j) {
        const uint64_t addr = s[(8 * i + j) * COLLECTIVE_WORDS];
        if (addr % 16 != 0) fail("ldmatrix", "a row address is not 16-byte aligned");
        return reinterpret_cast<const unsigned char*>(addr);
    };
    for (unsigned i = 0; i < NUM; ++i) {
        uint16_t lo, hi;
        if (TRANS) {
            std::memcpy(&lo, row_of(i, 2 * t) + 2 * g, 2);
            std::memcpy(&hi, row_of(i, 2 * t + 1) + 2 * g, 2);
        } else {
            std::memcpy(&lo, row_of(i, g) + 4 * t, 2);
            std::memcpy(&hi, row_of(i, g) + 4 * t + 2, 2);
        }
        r[i] = static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
    }
}

// cp.async: the copies this thread has issued since its last commit, and its committed groups,
// oldest first. A copy reads its source when issued and writes its destination only when a
// cp.async.wait_group of the issuing thread retires its group; in between, the destination holds
// 0xFF bytes (a NaN in every float and BF16). That is one schedule a GPU may run, and the one
// that shows a kernel reading a stage before waiting for it (or refilling a stage another thread
// still reads): it reads the poison. Copies still pending when the block ends are dropped.
struct AsyncCopy {
    unsigned char* dst;
    unsigned bytes;
    unsigned char data[16];
};
inline thread_local std::vector<AsyncCopy> async_open;
inline thread_local std::deque<std::vector<AsyncCopy>> async_groups;

// cp.async.{ca,cg}.shared.global [dst], [src], cp_size, src_size: cp_size (4, 8 or 16) bytes to
// shared memory, of which the first src_size come from src and the rest are zeros. Both addresses
// aligned to cp_size (src is not read, nor checked, when src_size is 0).
inline void cp_async(void* dst, const void* src, unsigned cp_size, unsigned src_size) {
    if (cp_size != 4 && cp_size != 8 && cp_size != 16) fail("cp.async", "the size must be 4, 8 or 16 bytes");
    if (src_size > cp_size) fail("cp.async", "src-size exceeds cp-size");
    if (reinterpret_cast<uint64_t>(dst) % cp_size != 0 ||
        (src_size > 0 && reinterpret_cast<uint64_t>(src) % cp_size != 0)) {
        fail("cp.async", "an address is not aligned to the copy size");
    }
    AsyncCopy c{static_cast<unsigned char*>(dst), cp_size, {}};
    if (src_size > 0) std::memcpy(c.data, src, src_size);
    std::memset(dst, 0xFF, cp_size);
    async_open.push_back(c);
}

// cp.async.commit_group: the open copies (possibly none) become the newest group.
inline void cp_async_commit() {
    async_groups.push_back(std::move(async_open));
    async_open.clear();
}

// cp.async.wait_group n: every group but the n newest has landed. (Copies not yet committed are in
// no group and stay pending.) cp.async.wait_all is a commit, then wait_group 0.
inline void cp_async_wait(unsigned n) {
    while (async_groups.size() > n) {
        for (const AsyncCopy& c : async_groups.front()) std::memcpy(c.dst, c.data, c.bytes);
        async_groups.pop_front();
    }
}

inline void reset_thread() {
    collective_set = 0;
    async_open.clear();
    async_groups.clear();
}

}  // namespace cuda_emu

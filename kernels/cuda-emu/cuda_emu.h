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
// atomicAdd on float, int and unsigned; __umulhi, rsqrtf and the int/float min and max;
// __fadd_rn, __fsub_rn, __fmul_rn; float4 (16-byte aligned, as on the GPU) and make_float4.
//
// Differences from a GPU that a kernel must not rely on: warps do not run in lockstep (shuffles
// synchronise the warp, nothing else does); float arithmetic is the host's (no FMA contraction
// unless the compiler picks it).
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
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

// What the threads of the running block share.
struct Launch {
    unsigned threads = 0;
    Barrier block;
    std::unique_ptr<Barrier[]> warps;
    std::vector<uint64_t> exchange;  // one shuffle slot per thread
    std::vector<unsigned char> dynamic_shared;
};

inline Launch* current = nullptr;
inline std::mutex launch_mutex;

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

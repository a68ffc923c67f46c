// common.cuh: included first by every kernel source. It picks the side the source is compiled
// for: NVRTC (the GPU) or g++ with our emulator (CUDA_EMU defined, see kernels/cuda-emu/).
//
// Conventions of every kernel: `extern "C"`, one argument, a parameter struct passed by value
// whose `#[repr(C)]` twin lives in the op's cuda.rs (`params!`), field by field (a test compares
// the two). Pointers are device addresses (host addresses under the emulator). A constant Rust
// needs too is a `#define NAME <number>` on a line of its own, which Rust reads from the source.
#pragma once

#ifdef CUDA_EMU
#include <cuda_emu.h>  // angle brackets: NVRTC never sees this line expanded
#else
// NVRTC has no C library headers: the fixed-width types we use.
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;
#define CUDA_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#define EMU_KERNEL(name, Params)
#endif

// Threads per block of the elementwise kernels (a multiple of the warp size).
#define ELEMENTWISE_THREADS 256

// The index of this thread in a 1-D grid, and the stride of a grid-stride loop over it.
__device__ __forceinline__ uint32_t global_thread() { return blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ uint32_t grid_threads() { return gridDim.x * blockDim.x; }

// Sum of `v` over the 32 lanes of a warp, every lane taking part; lane 0 holds the total.
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

// Sum of `v` over a block of `blockDim.x` threads (a multiple of 32, at most 1024): warp sums by
// shuffles, then warp 0 adds the warps' totals. Every thread must call it; thread 0 gets the total.
// `scratch` is __shared__ room for 32 values; the block may call it again after a __syncthreads.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
    const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? scratch[lane] : (T)0;
        v = warp_sum(v);
    }
    return v;
}

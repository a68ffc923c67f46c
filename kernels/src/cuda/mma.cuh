// mma.cuh: the tensor-core instructions of sm_80 that our kernels use, one device function each:
// inline PTX under NVRTC, the emulator's model (kernels/cuda-emu/cuda_emu.h) under CUDA_EMU, so
// that one source runs on both. Every kernel that includes this header needs sm_80 or newer (our
// target architectures are sm_80 and sm_90); on an older architecture the functions trap.
//
// - mma_tf32 / mma_bf16: d += a b for one warp, mma.sync m16n8k8 (TF32) and m16n8k16 (BF16), FP32
//   accumulators. Fragment layouts: cuda_emu.h, at mma_m16n8k8_tf32 and mma_m16n8k16_bf16.
// - ldmatrix_x1/x2/x4 (and _trans): 8 x 8 matrices of 16-bit elements from shared memory.
// - cp_async_16/8/4 (with a count of source bytes, the rest zero-filled), cp_async_commit,
//   cp_async_wait<N>: asynchronous global-to-shared copies in groups.
// - tf32_bits (cvt.rna.tf32.f32), bf16_bits (round to nearest even), bf16_pair, bf16_to_float.
#pragma once

#include "common.cuh"

#ifndef CUDA_EMU
typedef unsigned short uint16_t;
#endif

// A BF16 value: the upper 16 bits of an FP32 (sign, 8-bit exponent, 7 mantissa bits).
typedef uint16_t bf16_t;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define MMA_UNSUPPORTED 1
#endif

// The 32-bit shared-memory address of a generic pointer into shared memory (what the PTX of
// ldmatrix and cp.async take).
#ifndef CUDA_EMU
__device__ __forceinline__ uint32_t shared_addr(const void* p) {
    uint32_t a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
#endif

// x rounded to TF32 (round to nearest, ties away from zero), as FP32 bits: cvt.rna.tf32.f32.
__device__ __forceinline__ uint32_t tf32_bits(float x) {
#ifdef CUDA_EMU
    return cuda_emu::cvt_rna_tf32(x);
#else
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#endif
}

// x rounded to BF16 (round to nearest even, NaN to 0x7FFF), as __float2bfloat16_rn does.
__device__ __forceinline__ bf16_t bf16_bits(float x) {
#ifdef CUDA_EMU
    return cuda_emu::cvt_rn_bf16(x);
#else
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
#endif
}

// lo and hi rounded to BF16 and packed into one register, lo in the low half (one instruction on
// the GPU: cvt.rn.bf16x2.f32 puts its first source in the upper half).
__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
#ifdef CUDA_EMU
    return (uint32_t)cuda_emu::cvt_rn_bf16(lo) | (uint32_t)cuda_emu::cvt_rn_bf16(hi) << 16;
#else
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#endif
}

// A BF16 value as FP32 (exact).
__device__ __forceinline__ float bf16_to_float(bf16_t h) { return __uint_as_float((uint32_t)h << 16); }

// d += a b for the warp: a (16 x 8) in 4 TF32 registers, b (8 x 8) in 2, d (16 x 8) in 4 FP32.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef CUDA_EMU
    cuda_emu::mma_m16n8k8_tf32(d, a, b, d);
#elif defined(MMA_UNSUPPORTED)
    __trap();
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// d += a b for the warp: a (16 x 16) in 4 registers of BF16 pairs, b (16 x 8) in 2, d as above.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef CUDA_EMU
    cuda_emu::mma_m16n8k16_bf16(d, a, b, d);
#elif defined(MMA_UNSUPPORTED)
    __trap();
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16: `row` is this lane's row address
// (16-byte aligned, in shared memory): row lane % 8 of matrix lane / 8; r[i] receives this lane's
// part of matrix i (layouts: cuda_emu.h, at ldmatrix).
#if defined(CUDA_EMU)
#define LDMATRIX_FN(name, num, trans, ptx, ...)                                       \
    __device__ __forceinline__ void name(uint32_t (&r)[num], const void* row) {      \
        cuda_emu::ldmatrix<num, trans>(r, row);                                       \
    }
#elif defined(MMA_UNSUPPORTED)
#define LDMATRIX_FN(name, num, trans, ptx, ...)                                       \
    __device__ __forceinline__ void name(uint32_t (&r)[num], const void* row) {      \
        for (int i = 0; i < num; ++i) r[i] = 0;                                       \
        __trap();                                                                     \
    }
#else
#define LDMATRIX_FN(name, num, trans, ptx, ...)                                       \
    __device__ __forceinline__ void name(uint32_t (&r)[num], const void* row) {      \
        asm volatile(ptx : __VA_ARGS__ : "r"(shared_addr(row)));                      \
    }
#endif
LDMATRIX_FN(ldmatrix_x1, 1, false, "ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];", "=r"(r[0]))
LDMATRIX_FN(ldmatrix_x2, 2, false, "ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];", "=r"(r[0]),
            "=r"(r[1]))
LDMATRIX_FN(ldmatrix_x4, 4, false, "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];",
            "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
LDMATRIX_FN(ldmatrix_x1_trans, 1, true, "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];",
            "=r"(r[0]))
LDMATRIX_FN(ldmatrix_x2_trans, 2, true, "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];",
            "=r"(r[0]), "=r"(r[1]))
LDMATRIX_FN(ldmatrix_x4_trans, 4, true,
            "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];", "=r"(r[0]), "=r"(r[1]),
            "=r"(r[2]), "=r"(r[3]))
#undef LDMATRIX_FN

// cp.async of `bytes` (16, 8 or 4) to shared `dst` from global `src`, both aligned to `bytes`:
// the first src_bytes from src, zeros after (src is not read when src_bytes is 0). The 16-byte copy
// is .cg (cached in L2 only: tiles are reused from shared memory, not L1), the smaller ones .ca
// (.cg takes 16 bytes only).
#if defined(CUDA_EMU)
#define CP_ASYNC_FN(name, bytes, ptx)                                                              \
    __device__ __forceinline__ void name(void* dst, const void* src, uint32_t src_bytes) {        \
        cuda_emu::cp_async(dst, src, bytes, src_bytes);                                            \
    }
#elif defined(MMA_UNSUPPORTED)
#define CP_ASYNC_FN(name, bytes, ptx)                                                              \
    __device__ __forceinline__ void name(void*, const void*, uint32_t) { __trap(); }
#else
#define CP_ASYNC_FN(name, bytes, ptx)                                                              \
    __device__ __forceinline__ void name(void* dst, const void* src, uint32_t src_bytes) {        \
        asm volatile(ptx ::"r"(shared_addr(dst)), "l"(src), "n"(bytes), "r"(src_bytes) : "memory"); \
    }
#endif
CP_ASYNC_FN(cp_async_16, 16, "cp.async.cg.shared.global [%0], [%1], %2, %3;")
CP_ASYNC_FN(cp_async_8, 8, "cp.async.ca.shared.global [%0], [%1], %2, %3;")
CP_ASYNC_FN(cp_async_4, 4, "cp.async.ca.shared.global [%0], [%1], %2, %3;")
#undef CP_ASYNC_FN

// cp.async.commit_group: the copies this thread issued since its last commit form a group.
__device__ __forceinline__ void cp_async_commit() {
#if defined(CUDA_EMU)
    cuda_emu::cp_async_commit();
#elif !defined(MMA_UNSUPPORTED)
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// cp.async.wait_group N: waits until at most the N newest groups of this thread are in flight.
// Other threads' copies are visible only after a barrier that follows their waits.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(CUDA_EMU)
    cuda_emu::cp_async_wait(N);
#elif !defined(MMA_UNSUPPORTED)
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

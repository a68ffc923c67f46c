// The reduced-precision copies of the tensor-core paths, the CUDA twins of mod.rs's rounding
// (through mma.cuh's helpers, bit for bit): FP32 to BF16 (nearest even), BF16 to FP32 (exact),
// FP32 rounded to TF32 (cvt.rna, kept in FP32: operands a tensor-core kernel then need not round).
// Grid-stride loops over n values.
#include "common.cuh"
#include "mma.cuh"

struct ConvertParams {
    void* out;      // (n)
    const void* x;  // (n)
    uint32_t n;
};

// x: (n) FP32 -> out: (n) BF16, overwritten.
extern "C" __global__ void f32_to_bf16(ConvertParams p) {
    const float* x = static_cast<const float*>(p.x);
    bf16_t* out = static_cast<bf16_t*>(p.out);
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) out[i] = bf16_bits(x[i]);
}
EMU_KERNEL(f32_to_bf16, ConvertParams)

// x: (n) BF16 -> out: (n) FP32, overwritten.
extern "C" __global__ void bf16_to_f32(ConvertParams p) {
    const bf16_t* x = static_cast<const bf16_t*>(p.x);
    float* out = static_cast<float*>(p.out);
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) out[i] = bf16_to_float(x[i]);
}
EMU_KERNEL(bf16_to_f32, ConvertParams)

// x: (n) FP32 -> out: (n) FP32 rounded to TF32, overwritten (out may be x).
extern "C" __global__ void round_to_tf32(ConvertParams p) {
    const float* x = static_cast<const float*>(p.x);
    float* out = static_cast<float*>(p.out);
    for (uint32_t i = global_thread(); i < p.n; i += grid_threads()) out[i] = __uint_as_float(tf32_bits(x[i]));
}
EMU_KERNEL(round_to_tf32, ConvertParams)

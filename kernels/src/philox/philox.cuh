// philox.cuh: Philox4x32-10, the CUDA twin of kernels/src/philox/mod.rs. `mask_uniform` draws,
// bit for bit, what `MaskKey::uniform` draws on the CPU for the same (seed, step, layer, element).
#pragma once
#include "common.cuh"

// The stream of one consumer: `MaskKey` split into 32-bit words.
struct MaskKey {
    uint32_t seed_lo, seed_hi, step_lo, step_hi, layer;
};

struct Philox4 {
    uint32_t v[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
    const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += W0;
            k1 += W1;
        }
        const uint32_t hi0 = __umulhi(M0, c.v[0]), lo0 = M0 * c.v[0];
        const uint32_t hi1 = __umulhi(M1, c.v[2]), lo1 = M1 * c.v[2];
        const Philox4 next = {{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
        c = next;
    }
    return c;
}

// 32 random bits for element `elem`: elements 4i..4i+3 share the counter (i, layer, step).
__device__ __forceinline__ uint32_t mask_bits(MaskKey key, uint64_t elem) {
    const Philox4 ctr = {{(uint32_t)(elem / 4), key.layer, key.step_lo, key.step_hi}};
    return philox4x32_10(ctr, key.seed_lo, key.seed_hi).v[elem % 4];
}

// A uniform value in [0, 1): the top 24 bits scaled by 2^-24, exact in float.
__device__ __forceinline__ float mask_uniform(MaskKey key, uint64_t elem) {
    return (float)(mask_bits(key, elem) >> 8) * (1.0f / 16777216.0f);
}

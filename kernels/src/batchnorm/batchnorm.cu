// Batch norm, the CUDA twin of cpu.rs (formulas in mod.rs). x is viewed as (n, c, inner):
// (N, C, H, W) has inner = H*W, (N, F) has c = F and inner = 1; value j of channel ch, of the
// M = n * inner, is x[(s * c + ch) * inner + i] with s = j / inner, i = j % inner.
//
// Each pass with per-channel sums runs in two launches, so that a channel's M values are spread
// over many blocks (one block per channel was 128 blocks for the seed's widest layer, far too
// little in flight):
// 1. `*_partial`: a grid of c * chunks blocks; block (ch, chunk) sums the chunk-th run of
//    `chunk_len` values j of channel ch in double (each thread its quads of 4 consecutive j, in
//    order, then `block_sum`'s fixed tree) and writes its sums to `partial` (c, chunks, 2).
// 2. `*_finish`: one thread per channel adds its chunks' sums in chunk order and turns them into
//    the per-channel constants.
// Then an elementwise pass over all n * c * inner values, float4 at a time where the planes allow
// (`vec4`). chunks and chunk_len depend on the shape only (batchnorm/cuda.rs), so every sum is
// taken in one fixed order, whatever the scheduling; a float4 quad and the same quad read value
// by value are added in the same order too. The order differs from the CPU's serial one, so the
// f32 results can differ from it in the last place.
#include "common.cuh"

// Threads per block of every batch-norm kernel (a multiple of the warp size).
#define BATCHNORM_THREADS 256

// The shape and its split into chunks, shared by every batch-norm kernel.
struct BatchNormGeom {
    uint32_t n, c, inner;
    uint32_t chunks;     // blocks per channel of the `*_partial` kernels
    uint32_t chunk_len;  // values j per chunk, a multiple of 4; the last chunk may be shorter
    uint32_t vec4;       // 1: inner % 4 == 0 and every value array 16-byte aligned
};

// Where value j of channel ch lives.
__device__ __forceinline__ uint32_t value_index(const BatchNormGeom& g, uint32_t ch, uint32_t j) {
    const uint32_t s = j / g.inner;
    return (s * g.c + ch) * g.inner + (j - s * g.inner);
}

// Values of channel ch in [j, min(j + 4, end)) into v, and how many. VEC4: one float4 load (the
// quad lies in one plane and is 16-byte aligned, since inner and chunk_len are multiples of 4).
template <bool VEC4>
__device__ __forceinline__ uint32_t load_quad(float v[4], const float* a, const BatchNormGeom& g, uint32_t ch,
                                              uint32_t j, uint32_t end) {
    if (VEC4) {
        const float4 q = *reinterpret_cast<const float4*>(a + value_index(g, ch, j));
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
        return 4;
    }
    const uint32_t count = end - j < 4 ? end - j : 4;
    for (uint32_t k = 0; k < count; ++k) v[k] = a[value_index(g, ch, j + k)];
    return count;
}

// This block's channel and chunk in a `*_partial` grid, and the chunk's values [begin, end).
struct Chunk {
    uint32_t ch, index, begin, end;
};

__device__ __forceinline__ Chunk block_chunk(const BatchNormGeom& g) {
    const uint32_t ch = blockIdx.x / g.chunks, index = blockIdx.x % g.chunks, m = g.n * g.inner;
    const uint32_t begin = index * g.chunk_len;
    return {ch, index, begin, m - begin < g.chunk_len ? m : begin + g.chunk_len};
}

// Adds the block's two sums into partial[(ch * chunks + index) * 2 + {0, 1}]. Every thread calls it.
__device__ __forceinline__ void write_partial(double* partial, const BatchNormGeom& g, const Chunk& k, double a,
                                              double b) {
    __shared__ double scratch_a[32], scratch_b[32];
    a = block_sum(a, scratch_a);
    b = block_sum(b, scratch_b);
    if (threadIdx.x == 0) {
        partial[(k.ch * g.chunks + k.index) * 2] = a;
        partial[(k.ch * g.chunks + k.index) * 2 + 1] = b;
    }
}

// ---------------------------------------------------------------------------------------------
// Forward statistics

struct BatchNormMomentsParams {
    double* partial;  // (c, chunks, 2): sum(x - k), sum((x - k)^2) of each chunk
    const float* x;
    BatchNormGeom g;
};

// The shifted sums of cpu.rs's channel_moments, k = the channel's first value x[ch * inner].
template <bool VEC4>
__device__ __forceinline__ void moments_chunk(const BatchNormMomentsParams& p) {
    const Chunk k = block_chunk(p.g);
    const double shift = p.x[k.ch * p.g.inner];
    double s1 = 0.0, s2 = 0.0;
    for (uint32_t j = k.begin + 4 * threadIdx.x; j < k.end; j += 4 * blockDim.x) {
        float v[4];
        const uint32_t count = load_quad<VEC4>(v, p.x, p.g, k.ch, j, k.end);
        for (uint32_t q = 0; q < count; ++q) {
            const double e = (double)v[q] - shift;
            s1 += e;
            s2 += e * e;
        }
    }
    write_partial(p.partial, p.g, k, s1, s2);
}

// Grid: c * chunks blocks, block ch * chunks + chunk. x: (n, c, inner) -> partial: (c, chunks, 2).
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_moments_partial(BatchNormMomentsParams p) {
    if (p.g.vec4) {
        moments_chunk<true>(p);
    } else {
        moments_chunk<false>(p);
    }
}
EMU_KERNEL(batchnorm_moments_partial, BatchNormMomentsParams)

struct BatchNormStatsParams {
    float* mean;                // (c): the mean normalised with
    float* inv_std;             // (c): 1 / sqrt(var + eps)
    float* running_mean;        // (c): updated by train, read by eval
    float* running_var;         // (c): updated by train, read by eval
    const double* partial;      // (c, chunks, 2) from batchnorm_moments_partial; unused by eval
    const float* x;             // (n, c, inner): the shift k of each channel; unused by eval
    float eps;
    float momentum;             // weight of the old running value
    uint32_t unbiased;          // 1: the running variance averages var * M / (M - 1), 0: var
    BatchNormGeom g;
};

// Training: mean and biased variance from the chunks' shifted sums (added in chunk order), the
// running averages updated with the unbiased or the biased variance (`unbiased`), as in mod.rs.
// Grid: one thread per channel.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_moments_finish(BatchNormStatsParams p) {
    const uint32_t ch = global_thread();
    if (ch >= p.g.c) return;
    double s1 = 0.0, s2 = 0.0;
    for (uint32_t k = 0; k < p.g.chunks; ++k) {
        s1 += p.partial[(ch * p.g.chunks + k) * 2];
        s2 += p.partial[(ch * p.g.chunks + k) * 2 + 1];
    }
    const double m = (double)p.g.n * p.g.inner, shift = s1 / m;
    const double mean = (double)p.x[ch * p.g.inner] + shift, var = fmax(s2 / m - shift * shift, 0.0);
    const double keep = p.momentum, factor = p.unbiased ? m / (m - 1.0) : 1.0;
    p.mean[ch] = (float)mean;
    p.inv_std[ch] = (float)(1.0 / sqrt(var + (double)p.eps));
    p.running_mean[ch] = (float)(keep * p.running_mean[ch] + (1.0 - keep) * mean);
    p.running_var[ch] = (float)(keep * p.running_var[ch] + (1.0 - keep) * var * factor);
}
EMU_KERNEL(batchnorm_moments_finish, BatchNormStatsParams)

// Evaluation: mean = running_mean, inv_std = 1 / sqrt(running_var + eps) (a negative running
// variance gives NaN; the CPU refuses it, which here would cost a host read). Grid: one thread
// per channel.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_running_stats(BatchNormStatsParams p) {
    const uint32_t ch = global_thread();
    if (ch >= p.g.c) return;
    p.mean[ch] = p.running_mean[ch];
    p.inv_std[ch] = (float)(1.0 / sqrt((double)p.running_var[ch] + (double)p.eps));
}
EMU_KERNEL(batchnorm_running_stats, BatchNormStatsParams)

// ---------------------------------------------------------------------------------------------
// Forward output

struct BatchNormNormalizeParams {
    float* y;
    const float* x;
    const float* mean;     // (c)
    const float* inv_std;  // (c)
    const float* gamma;    // (c)
    const float* beta;     // (c)
    BatchNormGeom g;
};

// y = (x - mean) * (gamma * inv_std) + beta, as cpu.rs's normalize.
__device__ __forceinline__ float normalize_value(const BatchNormNormalizeParams& p, uint32_t ch, float v) {
    return (v - p.mean[ch]) * (p.gamma[ch] * p.inv_std[ch]) + p.beta[ch];
}

// Elementwise, grid-stride: float4 quads when vec4 (a quad lies in one plane), else values.
// x: (n, c, inner) -> y: same, overwritten.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_normalize(BatchNormNormalizeParams p) {
    const uint32_t total = p.g.n * p.g.c * p.g.inner;
    if (p.g.vec4) {
        const float4* x4 = reinterpret_cast<const float4*>(p.x);
        float4* y4 = reinterpret_cast<float4*>(p.y);
        for (uint32_t q = global_thread(); q < total / 4; q += grid_threads()) {
            const uint32_t ch = (4 * q / p.g.inner) % p.g.c;
            const float4 v = x4[q];
            y4[q] = make_float4(normalize_value(p, ch, v.x), normalize_value(p, ch, v.y), normalize_value(p, ch, v.z),
                                normalize_value(p, ch, v.w));
        }
    } else {
        for (uint32_t i = global_thread(); i < total; i += grid_threads()) {
            p.y[i] = normalize_value(p, (i / p.g.inner) % p.g.c, p.x[i]);
        }
    }
}
EMU_KERNEL(batchnorm_normalize, BatchNormNormalizeParams)

// ---------------------------------------------------------------------------------------------
// Backward

struct BatchNormGradSumsParams {
    double* partial;    // (c, chunks, 2): sum dy, sum dy * (x - mean) of each chunk
    const float* dy;
    const float* x;
    const float* mean;  // (c), from the forward
    BatchNormGeom g;
};

template <bool VEC4>
__device__ __forceinline__ void grad_sums_chunk(const BatchNormGradSumsParams& p) {
    const Chunk k = block_chunk(p.g);
    const double mu = p.mean[k.ch];
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    for (uint32_t j = k.begin + 4 * threadIdx.x; j < k.end; j += 4 * blockDim.x) {
        float g[4], v[4];
        const uint32_t count = load_quad<VEC4>(g, p.dy, p.g, k.ch, j, k.end);
        load_quad<VEC4>(v, p.x, p.g, k.ch, j, k.end);
        for (uint32_t q = 0; q < count; ++q) {
            sum_dy += g[q];
            sum_dy_xc += (double)g[q] * ((double)v[q] - mu);
        }
    }
    write_partial(p.partial, p.g, k, sum_dy, sum_dy_xc);
}

// The sums of cpu.rs's channel_grad_sums, by chunk. Grid: c * chunks blocks, block
// ch * chunks + chunk. dy, x: (n, c, inner) -> partial: (c, chunks, 2).
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_grad_partial(BatchNormGradSumsParams p) {
    if (p.g.vec4) {
        grad_sums_chunk<true>(p);
    } else {
        grad_sums_chunk<false>(p);
    }
}
EMU_KERNEL(batchnorm_grad_partial, BatchNormGradSumsParams)

struct BatchNormGradFinishParams {
    float* dgamma;          // (c), accumulated
    float* dbeta;           // (c), accumulated
    float* coef;            // (c, 2): sum(dy)/M, sum(dy x_hat)/M for batch statistics, 0 for running
    const double* partial;  // (c, chunks, 2) from batchnorm_grad_partial
    const float* inv_std;   // (c), from the forward
    uint32_t batch_stats;   // 1: the forward used batch statistics (train), 0: running ones
    BatchNormGeom g;
};

// dbeta += sum dy, dgamma += sum dy * x_hat = inv_std * sum dy * (x - mean), the chunks added in
// chunk order; the two means dx needs. Grid: one thread per channel.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_grad_finish(BatchNormGradFinishParams p) {
    const uint32_t ch = global_thread();
    if (ch >= p.g.c) return;
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    for (uint32_t k = 0; k < p.g.chunks; ++k) {
        sum_dy += p.partial[(ch * p.g.chunks + k) * 2];
        sum_dy_xc += p.partial[(ch * p.g.chunks + k) * 2 + 1];
    }
    const double sum_dy_xhat = sum_dy_xc * (double)p.inv_std[ch], m = (double)p.g.n * p.g.inner;
    p.dbeta[ch] += (float)sum_dy;
    p.dgamma[ch] += (float)sum_dy_xhat;
    p.coef[2 * ch] = p.batch_stats ? (float)(sum_dy / m) : 0.0f;
    p.coef[2 * ch + 1] = p.batch_stats ? (float)(sum_dy_xhat / m) : 0.0f;
}
EMU_KERNEL(batchnorm_grad_finish, BatchNormGradFinishParams)

struct BatchNormInputGradParams {
    float* dx;
    const float* dy;
    const float* x;
    const float* gamma;    // (c)
    const float* mean;     // (c), from the forward
    const float* inv_std;  // (c), from the forward
    const float* coef;     // (c, 2), from batchnorm_grad_finish
    BatchNormGeom g;
};

// dx = gamma * inv_std * (dy - sum(dy)/M - x_hat * sum(dy x_hat)/M), as cpu.rs's input_grad.
__device__ __forceinline__ float input_grad_value(const BatchNormInputGradParams& p, uint32_t ch, float g, float v) {
    const float inv = p.inv_std[ch], x_hat = (v - p.mean[ch]) * inv;
    return (p.gamma[ch] * inv) * (g - p.coef[2 * ch] - x_hat * p.coef[2 * ch + 1]);
}

// Elementwise, grid-stride, as batchnorm_normalize. dy, x: (n, c, inner) -> dx: same, overwritten.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_input_grad(BatchNormInputGradParams p) {
    const uint32_t total = p.g.n * p.g.c * p.g.inner;
    if (p.g.vec4) {
        const float4* dy4 = reinterpret_cast<const float4*>(p.dy);
        const float4* x4 = reinterpret_cast<const float4*>(p.x);
        float4* dx4 = reinterpret_cast<float4*>(p.dx);
        for (uint32_t q = global_thread(); q < total / 4; q += grid_threads()) {
            const uint32_t ch = (4 * q / p.g.inner) % p.g.c;
            const float4 g = dy4[q], v = x4[q];
            dx4[q] = make_float4(input_grad_value(p, ch, g.x, v.x), input_grad_value(p, ch, g.y, v.y),
                                 input_grad_value(p, ch, g.z, v.z), input_grad_value(p, ch, g.w, v.w));
        }
    } else {
        for (uint32_t i = global_thread(); i < total; i += grid_threads()) {
            p.dx[i] = input_grad_value(p, (i / p.g.inner) % p.g.c, p.dy[i], p.x[i]);
        }
    }
}
EMU_KERNEL(batchnorm_input_grad, BatchNormInputGradParams)

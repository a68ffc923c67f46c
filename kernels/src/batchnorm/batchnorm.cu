// Batch norm, the CUDA twin of cpu.rs (formulas in mod.rs). x is viewed as (n, c, inner):
// (N, C, H, W) has inner = H*W, (N, F) has c = F and inner = 1; value j of channel ch, of the
// M = n * inner, is x[(s * c + ch) * inner + i] with s = j / inner, i = j % inner.
//
// One block per channel: the block sums its channel in double (warp shuffles, then shared memory
// across warps, `block_sum`), thread 0 turns the sums into the per-channel constants, and the
// block then makes its elementwise pass over the same channel. The sums run in a different order
// than the CPU's serial ones, so the f32 results can differ from it in the last place.
#include "common.cuh"

// Threads per block of every batch-norm kernel (a multiple of the warp size).
#define BATCHNORM_THREADS 256

// Where value j of channel ch lives.
__device__ __forceinline__ uint32_t channel_index(uint32_t c, uint32_t inner, uint32_t ch, uint32_t j) {
    const uint32_t s = j / inner;
    return (s * c + ch) * inner + (j - s * inner);
}

struct BatchNormForwardParams {
    float* y;
    float* mean;          // (c): the mean normalised with
    float* inv_std;       // (c): 1 / sqrt(var + eps)
    float* running_mean;  // (c): updated by train, read by eval
    float* running_var;   // (c): updated by train, read by eval
    const float* x;
    const float* gamma;
    const float* beta;
    float eps;
    float momentum;  // weight of the old running value
    uint32_t n, c, inner;
};

// y = (x - mean) * (gamma * inv_std) + beta over this block's channel, as cpu.rs's normalize.
__device__ __forceinline__ void normalize_channel(const BatchNormForwardParams& p, uint32_t ch, float mean,
                                                  float inv_std) {
    const float scale = p.gamma[ch] * inv_std, shift = p.beta[ch];
    const uint32_t m = p.n * p.inner;
    for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
        const uint32_t i = channel_index(p.c, p.inner, ch, j);
        p.y[i] = (p.x[i] - mean) * scale + shift;
    }
}

// Training: batch mean and biased variance (two passes, double), the running averages updated
// with the unbiased variance, then y. Grid: one block per channel. x: (n, c, inner) -> y: same.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_forward_train(BatchNormForwardParams p) {
    __shared__ double scratch[32];
    __shared__ double block_mean;
    __shared__ float coef[2];  // mean, inv_std rounded to f32
    const uint32_t ch = blockIdx.x, m = p.n * p.inner;
    double sum = 0.0;
    for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) sum += p.x[channel_index(p.c, p.inner, ch, j)];
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) block_mean = sum / m;
    __syncthreads();  // also: warp 0 has read scratch, so the next block_sum may reuse it
    const double mean = block_mean;
    double sq = 0.0;
    for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
        const double e = p.x[channel_index(p.c, p.inner, ch, j)] - mean;
        sq += e * e;
    }
    sq = block_sum(sq, scratch);
    if (threadIdx.x == 0) {
        const double var = sq / m, keep = p.momentum, unbiased = (double)m / (m - 1);
        const float mean_f = (float)mean, inv = (float)(1.0 / sqrt(var + (double)p.eps));
        p.mean[ch] = mean_f;
        p.inv_std[ch] = inv;
        p.running_mean[ch] = (float)(keep * p.running_mean[ch] + (1.0 - keep) * mean);
        p.running_var[ch] = (float)(keep * p.running_var[ch] + (1.0 - keep) * var * unbiased);
        coef[0] = mean_f;
        coef[1] = inv;
    }
    __syncthreads();
    normalize_channel(p, ch, coef[0], coef[1]);
}
EMU_KERNEL(batchnorm_forward_train, BatchNormForwardParams)

// Evaluation: normalises with the running statistics (a negative running variance gives NaN;
// the CPU refuses it, which here would cost a host read). mean and inv_std are written for
// backward. Grid: one block per channel. x: (n, c, inner) -> y: same.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_forward_eval(BatchNormForwardParams p) {
    const uint32_t ch = blockIdx.x;
    const float mean = p.running_mean[ch];
    const float inv = (float)(1.0 / sqrt((double)p.running_var[ch] + (double)p.eps));
    if (threadIdx.x == 0) {
        p.mean[ch] = mean;
        p.inv_std[ch] = inv;
    }
    normalize_channel(p, ch, mean, inv);
}
EMU_KERNEL(batchnorm_forward_eval, BatchNormForwardParams)

struct BatchNormBackwardParams {
    float* dx;
    float* dgamma;  // (c), accumulated
    float* dbeta;   // (c), accumulated
    const float* dy;
    const float* x;
    const float* gamma;
    const float* mean;     // (c), from the forward
    const float* inv_std;  // (c), from the forward
    uint32_t batch_stats;  // 1: the forward used batch statistics (train), 0: running ones
    uint32_t n, c, inner;
};

// dbeta += sum dy, dgamma += sum dy * x_hat (double, one pass), then
// dx = gamma * inv_std * (dy - sum(dy)/M - x_hat * sum(dy x_hat)/M) for batch statistics,
// dx = gamma * inv_std * dy for running ones. Grid: one block per channel.
// dy, x: (n, c, inner) -> dx: same, overwritten.
extern "C" __global__ void __launch_bounds__(BATCHNORM_THREADS) batchnorm_backward(BatchNormBackwardParams p) {
    __shared__ double scratch_dy[32], scratch_dy_xhat[32];
    __shared__ float coef[2];  // sum(dy)/M, sum(dy x_hat)/M
    const uint32_t ch = blockIdx.x, m = p.n * p.inner;
    const float mean = p.mean[ch], inv = p.inv_std[ch];
    const double mean_d = mean, inv_d = inv;
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
        const uint32_t i = channel_index(p.c, p.inner, ch, j);
        const double g = p.dy[i];
        sum_dy += g;
        sum_dy_xhat += g * ((double)p.x[i] - mean_d) * inv_d;
    }
    sum_dy = block_sum(sum_dy, scratch_dy);
    sum_dy_xhat = block_sum(sum_dy_xhat, scratch_dy_xhat);
    if (threadIdx.x == 0) {
        p.dbeta[ch] += (float)sum_dy;
        p.dgamma[ch] += (float)sum_dy_xhat;
        coef[0] = p.batch_stats ? (float)(sum_dy / m) : 0.0f;
        coef[1] = p.batch_stats ? (float)(sum_dy_xhat / m) : 0.0f;
    }
    __syncthreads();
    const float scale = p.gamma[ch] * inv, mean_dy = coef[0], mean_dy_xhat = coef[1];
    for (uint32_t j = threadIdx.x; j < m; j += blockDim.x) {
        const uint32_t i = channel_index(p.c, p.inner, ch, j);
        const float x_hat = (p.x[i] - mean) * inv;
        p.dx[i] = scale * (p.dy[i] - mean_dy - x_hat * mean_dy_xhat);
    }
}
EMU_KERNEL(batchnorm_backward, BatchNormBackwardParams)

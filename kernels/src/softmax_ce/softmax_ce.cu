// Softmax cross-entropy, the CUDA twin of cpu.rs: one thread per row (a plain port), the
// exponentials taken and summed in double as on the CPU.
#include "common.cuh"

struct SoftmaxCeForwardParams {
    float* probs;
    double* row_loss;  // -log p[label] per row, -1 for a label >= classes
    const float* logits;
    const uint32_t* labels;
    uint32_t rows, classes;
};

// logits: (rows, classes), labels: (rows) -> probs: (rows, classes), row_loss: (rows).
extern "C" __global__ void softmax_ce_forward(SoftmaxCeForwardParams p) {
    for (uint32_t r = global_thread(); r < p.rows; r += grid_threads()) {
        const float* z = p.logits + (uint64_t)r * p.classes;
        float* out = p.probs + (uint64_t)r * p.classes;
        float mx = z[0];  // classes > 0; fmaxf skips NaN as f32::max does
        for (uint32_t j = 1; j < p.classes; ++j) mx = fmaxf(mx, z[j]);
        double sum = 0.0;
        for (uint32_t j = 0; j < p.classes; ++j) sum += exp((double)(z[j] - mx));
        for (uint32_t j = 0; j < p.classes; ++j) out[j] = (float)(exp((double)(z[j] - mx)) / sum);
        // A label out of range gets the impossible loss -1, which the host refuses.
        const uint32_t label = p.labels[r];
        p.row_loss[r] = label < p.classes ? log(sum) - (double)(z[label] - mx) : -1.0;
    }
}
EMU_KERNEL(softmax_ce_forward, SoftmaxCeForwardParams)

struct SoftmaxCeBackwardParams {
    float* dlogits;
    const float* probs;
    const uint32_t* labels;
    uint32_t rows, classes;
};

// probs: (rows, classes), labels: (rows) -> dlogits = (probs - onehot) / rows, overwritten.
extern "C" __global__ void softmax_ce_backward(SoftmaxCeBackwardParams p) {
    const float inv_n = 1.0f / (float)p.rows;
    const uint32_t n = p.rows * p.classes;
    for (uint32_t i = global_thread(); i < n; i += grid_threads()) {
        const uint32_t r = i / p.classes, j = i % p.classes;
        const float onehot = j == p.labels[r] ? 1.0f : 0.0f;
        p.dlogits[i] = (p.probs[i] - onehot) * inv_n;
    }
}
EMU_KERNEL(softmax_ce_backward, SoftmaxCeBackwardParams)

struct SoftmaxCeTallyParams {
    double* sums;  // last loss, last correct, loss sum, correct sum (tally.rs)
    const double* row_loss;
    const float* probs;
    const uint32_t* labels;
    uint32_t rows, classes;
};

// One block. row_loss: (rows), probs: (rows, classes), labels: (rows) -> sums: (4), accumulated:
// the minibatch's mean loss (rows summed in order, as the CPU does, rounded to float) and the
// rows whose first largest probability is at the label. Counts are integers: any order is exact.
extern "C" __global__ void softmax_ce_tally(SoftmaxCeTallyParams p) {
    __shared__ double scratch[32];
    double hits = 0.0;
    for (uint32_t r = threadIdx.x; r < p.rows; r += blockDim.x) {
        const float* row = p.probs + (uint64_t)r * p.classes;
        uint32_t best = 0;
        for (uint32_t j = 1; j < p.classes; ++j)
            if (row[j] > row[best]) best = j;
        hits += best == p.labels[r] ? 1.0 : 0.0;
    }
    hits = block_sum(hits, scratch);
    if (threadIdx.x == 0) {
        double sum = 0.0;
        for (uint32_t r = 0; r < p.rows; ++r) sum += p.row_loss[r];
        const float loss = (float)(sum / (double)p.rows);
        p.sums[0] = (double)loss;
        p.sums[1] = hits;
        p.sums[2] += (double)loss;
        p.sums[3] += hits;
    }
}
EMU_KERNEL(softmax_ce_tally, SoftmaxCeTallyParams)

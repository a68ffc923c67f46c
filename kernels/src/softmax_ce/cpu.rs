use rayon::prelude::*;

/// Writes each row's softmax into `probs` and returns the sum over rows of -log p[label], summed
/// in f64 in row order. Rows are independent and run in parallel.
pub fn forward(probs: &mut [f32], logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    let losses: Vec<f64> = probs
        .par_chunks_mut(classes)
        .zip(logits.par_chunks(classes))
        .zip(labels.par_iter())
        .map(|((p, z), &label)| row(p, z, label as usize))
        .collect();
    losses.iter().sum()
}

/// One row: p = softmax(z), returns log(sum exp(z - max)) - (z[label] - max).
/// The exponentials are taken and summed in f64, then rounded once into `p`.
fn row(p: &mut [f32], z: &[f32], label: usize) -> f64 {
    let (max, sum) = shifted_exp_sum(z);
    for (p, &v) in p.iter_mut().zip(z) {
        *p = (shifted(v, max).exp() / sum) as f32;
    }
    sum.ln() - shifted(z[label], max)
}

/// One row's softmax cross-entropy, log(sum exp(z - max)) - (z[label] - max), exactly as
/// [`forward`] computes it for each row: for callers that sum per-image losses themselves.
pub fn cross_entropy(z: &[f32], label: usize) -> f64 {
    let (max, sum) = shifted_exp_sum(z);
    sum.ln() - shifted(z[label], max)
}

/// The row's largest value and the sum of exp(z - max) in f64 (no exponential overflows).
fn shifted_exp_sum(z: &[f32]) -> (f32, f64) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    (max, z.iter().map(|&v| shifted(v, max).exp()).sum())
}

/// v - max, rounded in f32 as the kernels do, then widened.
fn shifted(v: f32, max: f32) -> f64 {
    (v - max) as f64
}

/// dlogits[n, j] = (probs[n, j] - [j == label_n]) / N.
pub fn backward(dlogits: &mut [f32], probs: &[f32], labels: &[u32], classes: usize) {
    let inv_n = 1.0 / labels.len() as f32;
    dlogits
        .par_chunks_mut(classes)
        .zip(probs.par_chunks(classes))
        .zip(labels.par_iter())
        .for_each(|((d, p), &label)| {
            for (j, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                let onehot = if j == label as usize { 1.0 } else { 0.0 };
                *d = (p - onehot) * inv_n;
            }
        });
}

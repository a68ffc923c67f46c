use rayon::prelude::*;

/// Values per chunk of the sum. Fixed, so the order of additions never depends on the threads.
const CHUNK: usize = 1 << 14;

/// sum(x^2) in f64: each chunk summed serially, then the chunk sums added in chunk order.
pub fn sum_of_squares(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&v| v as f64 * v as f64).sum())
        .collect();
    partial.iter().sum()
}

/// x *= s.
pub fn scale(x: &mut [f32], s: f32) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v *= s));
}

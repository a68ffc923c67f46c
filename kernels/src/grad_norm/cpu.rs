use rayon::prelude::*;

/// Values per chunk of the sum. Fixed, so the order of additions never depends on the threads.
const CHUNK: usize = 1 << 14;

/// Independent running sums inside a chunk: enough f64 accumulators to hide the latency of an
/// add and to fill the vector registers (two AVX-512 registers of 8 f64).
const LANES: usize = 16;

/// sum(x^2) in f64: each chunk summed serially, then the chunk sums added in chunk order.
///
/// Inside a chunk, value i goes to accumulator i % LANES and the accumulators are added in lane
/// order at the end: a fixed order, so the same bits for any thread count, and about LANES times
/// faster than one chain of dependent adds.
pub fn sum_of_squares(x: &[f32]) -> f64 {
    let partial: Vec<f64> = x.par_chunks(CHUNK).map(chunk_sum_of_squares).collect();
    partial.iter().sum()
}

fn chunk_sum_of_squares(c: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let mut groups = c.chunks_exact(LANES);
    for group in &mut groups {
        for (a, &v) in acc.iter_mut().zip(group) {
            *a += v as f64 * v as f64;
        }
    }
    for (a, &v) in acc.iter_mut().zip(groups.remainder()) {
        *a += v as f64 * v as f64;
    }
    acc.iter().sum()
}

/// x *= s.
pub fn scale(x: &mut [f32], s: f32) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v *= s));
}

//! ReLU on the CPU: elementwise, rayon over fixed-size chunks.

use rayon::prelude::*;

/// Values per rayon task: large enough that scheduling costs little next to the work.
pub(super) const CHUNK: usize = 1 << 14;

/// y = max(x, 0), except that a NaN stays NaN (as in PyTorch and TensorFlow): a diverged
/// activation must not be silently turned into a clean 0.
pub(super) fn forward(y: &mut [f32], x: &[f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(ys, xs)| {
            for (o, &v) in ys.iter_mut().zip(xs) {
                *o = if v > 0.0 || v.is_nan() { v } else { 0.0 };
            }
        });
}

pub(super) fn backward(dx: &mut [f32], dy: &[f32], x: &[f32]) {
    dx.par_chunks_mut(CHUNK)
        .zip(dy.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
        .for_each(|(dxs, (dys, xs))| {
            for ((o, &g), &v) in dxs.iter_mut().zip(dys).zip(xs) {
                *o = if v > 0.0 { g } else { 0.0 };
            }
        });
}

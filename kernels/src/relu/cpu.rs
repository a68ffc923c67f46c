//! ReLU on the CPU: elementwise, rayon over fixed-size chunks.

use rayon::prelude::*;

/// Values per rayon task: large enough that scheduling costs little next to the work.
pub(super) const CHUNK: usize = 1 << 14;

/// y = max(x, 0), except that a NaN stays NaN (as in PyTorch and TensorFlow): a diverged
/// activation must not be silently turned into a clean 0.
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 || v.is_nan() {
        v
    } else {
        0.0
    }
}

pub(super) fn forward(y: &mut [f32], x: &[f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(ys, xs)| {
            for (o, &v) in ys.iter_mut().zip(xs) {
                *o = relu(v);
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

/// x = max(x, 0) in place; mask[i] = 1 where x[i] > 0 before, else 0.
pub(super) fn forward_in_place(x: &mut [f32], mask: &mut [u8]) {
    x.par_chunks_mut(CHUNK)
        .zip(mask.par_chunks_mut(CHUNK))
        .for_each(|(xs, ms)| {
            for (v, m) in xs.iter_mut().zip(ms) {
                *m = (*v > 0.0) as u8;
                *v = relu(*v);
            }
        });
}

/// acc = max(acc + b, 0) in place; mask[i] = 1 where acc[i] + b[i] > 0, else 0.
pub(super) fn add_forward_in_place(acc: &mut [f32], b: &[f32], mask: &mut [u8]) {
    acc.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK).zip(mask.par_chunks_mut(CHUNK)))
        .for_each(|(accs, (bs, ms))| {
            for ((v, &q), m) in accs.iter_mut().zip(bs).zip(ms) {
                let s = *v + q;
                *m = (s > 0.0) as u8;
                *v = relu(s);
            }
        });
}

/// dy = dy where mask is 1, else 0, in place (dy becomes dx).
pub(super) fn backward_in_place(dy: &mut [f32], mask: &[u8]) {
    dy.par_chunks_mut(CHUNK)
        .zip(mask.par_chunks(CHUNK))
        .for_each(|(gs, ms)| {
            for (g, &m) in gs.iter_mut().zip(ms) {
                *g = if m != 0 { *g } else { 0.0 };
            }
        });
}

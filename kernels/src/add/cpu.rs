//! Elementwise sums on the CPU, rayon over fixed-size chunks.

use rayon::prelude::*;

/// Values per rayon task.
pub(super) const CHUNK: usize = 1 << 14;

pub(super) fn add(y: &mut [f32], a: &[f32], b: &[f32]) {
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(ys, (as_, bs))| {
            for ((o, &p), &q) in ys.iter_mut().zip(as_).zip(bs) {
                *o = p + q;
            }
        });
}

pub(super) fn add_assign(acc: &mut [f32], b: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(accs, bs)| {
            for (o, &q) in accs.iter_mut().zip(bs) {
                *o += q;
            }
        });
}

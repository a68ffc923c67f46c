use rayon::prelude::*;

use super::Sgd;

/// Values per rayon task.
const CHUNK: usize = 1 << 14;

/// The per-value SGD step; every value is independent.
pub fn update(w: &mut [f32], buf: &mut [f32], g: &[f32], cfg: &Sgd) {
    let Sgd {
        lr,
        momentum,
        nesterov,
        weight_decay,
    } = *cfg;
    w.par_chunks_mut(CHUNK)
        .zip(buf.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|((w, buf), g)| {
            for ((w, b), &g) in w.iter_mut().zip(buf).zip(g) {
                let d = g + weight_decay * *w;
                *b = momentum * *b + d;
                let step = if nesterov { d + momentum * *b } else { *b };
                *w -= lr * step;
            }
        });
}

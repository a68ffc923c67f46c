use rayon::prelude::*;

use super::Adam;

/// Values per rayon task.
const CHUNK: usize = 1 << 14;

/// The per-value Adam step with the bias-corrected step size `lr_t`; every value is independent.
pub fn update(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], cfg: &Adam, lr_t: f32) {
    let Adam {
        beta1: b1,
        beta2: b2,
        epsilon: eps,
        ..
    } = *cfg;
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| {
            for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *w -= lr_t * *m / (v.sqrt() + eps);
            }
        });
}

use rayon::prelude::*;

use super::Adam;

/// Values per rayon task.
const CHUNK: usize = 1 << 14;

/// The per-value Adam step with the bias-corrected step size `lr_t`; every value is independent.
pub fn update(w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], cfg: &Adam, lr_t: f32) {
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| {
            for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                step(w, m, v, g, cfg, lr_t);
            }
        });
}

/// [`update`] with the gradient first multiplied by `grad_scale` (the clip factor; skipped when
/// it is 1, as `scale_in_place` would be) and then zeroed: clipping, the update and the next
/// step's zero gradient in one pass over memory instead of three. Bit-identical to those three
/// passes: each value sees the same f32 operations in the same order.
pub fn update_scaled_and_zero(
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &mut [f32],
    cfg: &Adam,
    lr_t: f32,
    grad_scale: f32,
) {
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks_mut(CHUNK))
        .for_each(|(((w, m), v), g)| {
            // Three simple loops over a chunk that stays in cache (64 KiB a tensor), each of
            // which the compiler vectorises; one loop doing all three did not vectorise and ran
            // 4x slower than the three separate passes.
            if grad_scale != 1.0 {
                g.iter_mut().for_each(|x| *x *= grad_scale);
            }
            for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g.iter()) {
                step(w, m, v, g, cfg, lr_t);
            }
            g.fill(0.0);
        });
}

/// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= lr_t m / (sqrt(v) + eps).
#[inline(always)]
fn step(w: &mut f32, m: &mut f32, v: &mut f32, g: f32, cfg: &Adam, lr_t: f32) {
    let Adam {
        beta1: b1,
        beta2: b2,
        epsilon: eps,
        ..
    } = *cfg;
    *m = b1 * *m + (1.0 - b1) * g;
    *v = b2 * *v + (1.0 - b2) * g * g;
    *w -= lr_t * *m / (v.sqrt() + eps);
}

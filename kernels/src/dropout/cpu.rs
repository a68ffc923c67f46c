use rayon::prelude::*;

use crate::philox::MaskKey;

/// Values per rayon task.
const CHUNK: usize = 1 << 14;

/// out[i] = inp[i] / keep if `key.uniform(i) < keep`, else 0.
///
/// Forward (inp = x) and backward (inp = dy) are this same map: dropout is linear in x with a
/// diagonal Jacobian diag(mask / keep).
pub fn apply_mask(out: &mut [f32], inp: &[f32], keep: f32, key: MaskKey) {
    if keep == 1.0 {
        out.copy_from_slice(inp);
        return;
    }
    let scale = 1.0 / keep;
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (out, inp))| {
            key.for_each_uniform((c * CHUNK) as u64, out.len(), |i, u| {
                out[i] = if u < keep { inp[i] * scale } else { 0.0 };
            });
        });
}

//! Max-pooling on the CPU: rayon over (n, c) planes, each plane serial.

use rayon::prelude::*;

use super::{Pool2d, PoolGeometry};

/// The valid input range [start, end) of window `o` along one axis, padded cells left out.
fn window(o: usize, stride: usize, kernel: usize, before: usize, input: usize) -> (usize, usize) {
    let start = (o * stride) as isize - before as isize;
    let end = start + kernel as isize;
    (start.max(0) as usize, end.min(input as isize) as usize)
}

pub(super) fn forward(y: &mut [f32], argmax: &mut [u32], x: &[f32], p: &Pool2d, g: &PoolGeometry) {
    let (oh, ow) = (g.rows.out, g.cols.out);
    let (kh, kw) = p.kernel;
    let (sh, sw) = p.stride;
    // The windows are the same in every plane: find their valid ranges once.
    let rows: Vec<_> = (0..oh)
        .map(|o| window(o, sh, kh, g.rows.before, g.h))
        .collect();
    let cols: Vec<_> = (0..ow)
        .map(|o| window(o, sw, kw, g.cols.before, g.w))
        .collect();
    y.par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow))
        .zip(x.par_chunks(g.h * g.w))
        .for_each(|((ys, idx), plane)| {
            for (oy, &(r0, r1)) in rows.iter().enumerate() {
                for (ox, &(c0, c1)) in cols.iter().enumerate() {
                    // SAME padding leaves at least one real cell in every window: start from it.
                    let mut best_i = r0 * g.w + c0;
                    let mut best = plane[best_i];
                    for r in r0..r1 {
                        for c in c0..c1 {
                            let v = plane[r * g.w + c];
                            if v > best {
                                best = v;
                                best_i = r * g.w + c;
                            }
                        }
                    }
                    ys[oy * ow + ox] = best;
                    idx[oy * ow + ox] = best_i as u32;
                }
            }
        });
}

pub(super) fn backward(dx: &mut [f32], dy: &[f32], argmax: &[u32], g: &PoolGeometry) {
    let plane_out = g.rows.out * g.cols.out;
    dx.par_chunks_mut(g.h * g.w)
        .zip(dy.par_chunks(plane_out).zip(argmax.par_chunks(plane_out)))
        .for_each(|(dxs, (dys, idx))| {
            dxs.fill(0.0);
            for (&d, &i) in dys.iter().zip(idx) {
                dxs[i as usize] += d;
            }
        });
}

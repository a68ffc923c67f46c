use rayon::prelude::*;

use super::dropblock_gamma;
use crate::philox::MaskKey;

/// Values per rayon task in [`apply`].
const CHUNK: usize = 1 << 14;

/// Fills `mask` ((N*C) planes of H x W; 1 kept, 0 dropped) and returns how many values are kept.
///
/// Planes are independent and drawn in parallel; the count is an integer sum, exact in any order.
/// Needs h >= block and w >= block.
pub fn draw_mask(
    mask: &mut [u8],
    h: usize,
    w: usize,
    block: usize,
    gamma: f32,
    key: MaskKey,
) -> u64 {
    mask.par_chunks_mut(h * w)
        .enumerate()
        .map(|(plane, m)| draw_plane(m, plane, h, w, block, gamma, key))
        .collect::<Vec<u64>>()
        .iter()
        .sum()
}

/// A mask of `len` values in (N*C) planes of H x W, drawn with the rate of [`dropblock_gamma`]
/// for `block` and `keep`, and its rescale factor len / kept (0 when nothing is kept), computed
/// once in f64 and rounded to f32. Needs h >= block and w >= block.
pub fn mask_and_scale(
    len: usize,
    h: usize,
    w: usize,
    block: usize,
    keep: f32,
    key: MaskKey,
) -> (Vec<u8>, f32) {
    let gamma = dropblock_gamma(h, w, block, keep);
    let mut mask = vec![0u8; len];
    let kept = draw_mask(&mut mask, h, w, block, gamma, key);
    let scale = if kept == 0 {
        0.0
    } else {
        (mask.len() as f64 / kept as f64) as f32
    };
    (mask, scale)
}

/// One (H, W) plane: a drawn centre at grid (i, j) zeroes the block x block square with top-left
/// corner (i, j) (the closed form of pad + SAME max-pool derived in the module doc).
fn draw_plane(
    m: &mut [u8],
    plane: usize,
    h: usize,
    w: usize,
    block: usize,
    gamma: f32,
    key: MaskKey,
) -> u64 {
    let (gh, gw) = (h - block + 1, w - block + 1);
    let first = (plane * gh * gw) as u64;
    m.fill(1);
    key.for_each_uniform(first, gh * gw, |e, u| {
        if u < gamma {
            let (i, j) = (e / gw, e % gw);
            for row in m[i * w..].chunks_mut(w).take(block) {
                row[j..j + block].fill(0);
            }
        }
    });
    m.iter().map(|&k| k as u64).sum()
}

/// out[i] = inp[i] * scale where keep[i] is 1, else 0.
pub fn apply(out: &mut [f32], inp: &[f32], keep: &[u8], scale: f32) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(keep.par_chunks(CHUNK))
        .for_each(|((out, inp), keep)| {
            for ((o, &v), &k) in out.iter_mut().zip(inp).zip(keep) {
                *o = if k == 1 { v * scale } else { 0.0 };
            }
        });
}

/// x[i] *= scale where keep[i] is 1, else 0, in place.
pub fn apply_in_place(x: &mut [f32], keep: &[u8], scale: f32) {
    x.par_chunks_mut(CHUNK)
        .zip(keep.par_chunks(CHUNK))
        .for_each(|(x, keep)| {
            for (v, &k) in x.iter_mut().zip(keep) {
                *v = if k == 1 { *v * scale } else { 0.0 };
            }
        });
}

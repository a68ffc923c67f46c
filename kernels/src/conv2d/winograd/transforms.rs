//! The four transforms of a Winograd pass, for either tile size ([`Tile`]): input V = B^T d B,
//! weight U = G g G^T, output y = A^T M A, and for backward-weight the gradient tile
//! Z = A dy A^T and the weight gradient G^T S G.
//!
//! The input, gradient and output transforms put [`LANES`] images side by side in the lanes of
//! a vector: each channel's planes of LANES images are copied once into one buffer whose every
//! pixel is a [`Lanes`] (zeros around the map, the padding), and each tile is then transformed
//! as small matrix products whose every term is one whole-vector multiply-add (`combine`), so a
//! tile of LANES images costs what one image's would in scalar code, whatever the map's size.
//! (Vectors along a row of tiles, as before, were 1 to 8 values long on the 4x4 to 32x32 maps
//! and left the input transform at 43% of a Winograd pass's time.) The small matrices' zero
//! coefficients are left out before those loops. All three are split between threads by
//! channel.
//!
//! Columns of a group's transformed tensors, P = tiles x images: tile (ty, tx) of image g of
//! the group is column p = (ty tw + tx) G + g, so the LANES images of a vector are LANES
//! consecutive columns.

use rayon::prelude::*;

use super::matrices::Tile;
use super::{lines, Orientation, Plan};
use crate::simd::{self, multiversion, Isa};

/// The largest input tile side, F(4x4)'s 6.
const MAX_ALPHA: usize = 6;

/// Images side by side in the transforms' vectors: one AVX-512 register of f32, two AVX2 ones.
pub(super) const LANES: usize = 16;

/// One value (a pixel, a position of a transformed tile) of [`LANES`] images.
pub(super) type Lanes = [f32; LANES];

/// A 16 x 16 block of values: 16 images' values of 16 pixels, one row per image (as the planes
/// store them) or one row per pixel (as the transforms read them); [`transpose`] turns one into
/// the other.
type Block = [Lanes; LANES];

/// Transposes `block` in place: block[i][j] and block[j][i] swap.
#[inline(always)]
fn transpose(isa: Isa, block: &mut Block) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `isa` is `simd::isa`'s, Avx512 only on a CPU with AVX-512 F.
        unsafe { transpose_avx512(block) };
        return;
    }
    let _ = isa;
    *block = std::array::from_fn(|i| std::array::from_fn(|j| block[j][i]));
}

/// [`transpose`] in 16 AVX-512 registers: four rounds of `vpermt2ps` that swap the off-diagonal
/// d x d blocks of every 2d x 2d block, d = 8, 4, 2, 1 (64 permutes for 256 values, where the
/// compiler's own transposing copy was a scatter of single values).
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose_avx512(block: &mut Block) {
    use std::arch::x86_64::*;
    // SAFETY: each row is 16 f32, one unaligned 512-bit load or store.
    let mut r: [__m512; LANES] =
        std::array::from_fn(|i| unsafe { _mm512_loadu_ps(block[i].as_ptr()) });
    for d in [8, 4, 2, 1] {
        // Row i (bit d clear) takes its own values where column bit d is clear and row i + d's
        // d columns before them where it is set; row i + d the other two quarters.
        let lo: [i32; 16] = std::array::from_fn(|j| if j & d == 0 { j } else { 16 + j - d } as i32);
        let hi: [i32; 16] = std::array::from_fn(|j| if j & d == 0 { j + d } else { 16 + j } as i32);
        // SAFETY: 16 i32 each.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_epi32(lo.as_ptr()),
                _mm512_loadu_epi32(hi.as_ptr()),
            )
        };
        for i in (0..LANES).filter(|i| i & d == 0) {
            let (a, b) = (r[i], r[i + d]);
            r[i] = _mm512_permutex2var_ps(a, lo, b);
            r[i + d] = _mm512_permutex2var_ps(a, hi, b);
        }
    }
    for (row, v) in block.iter_mut().zip(r) {
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(row.as_mut_ptr(), v) };
    }
}

/// Copies the planes (h, w) of `lanes` images, `plane(l)` for lane l, into buf's lanes: a map
/// `width` pixels wide whose pixel (y, x) is plane pixel (y - offset, x - offset). Cells outside
/// the planes are not touched: every plane of a call has the same size, so the border a buffer
/// started with (zeros) stays; lanes from `lanes` on keep what they held.
#[inline(always)]
fn planes_to_lanes<'p>(
    isa: Isa,
    buf: &mut [Lanes],
    width: usize,
    offset: usize,
    (h, w): (usize, usize),
    lanes: usize,
    plane: impl Fn(usize) -> &'p [f32],
) {
    let mut block = [[0.0f32; LANES]; LANES];
    let (mut y, mut x) = (0, 0);
    for seg in (0..h * w).step_by(LANES) {
        let n = LANES.min(h * w - seg);
        for (l, row) in block[..lanes].iter_mut().enumerate() {
            copy_lanes(&mut row[..n], &plane(l)[seg..]);
        }
        transpose(isa, &mut block);
        for v in &block[..n] {
            buf[(y + offset) * width + offset + x] = *v;
            x += 1;
            if x == w {
                (y, x) = (y + 1, 0);
            }
        }
    }
}

/// The inverse of [`planes_to_lanes`] without offset: writes the planes (h, w) of
/// `planes.len()` images from buf's lanes, pixel (y, x) from buf[y width + x].
#[inline(always)]
fn lanes_to_planes(
    isa: Isa,
    planes: &mut [&mut [f32]],
    buf: &[Lanes],
    width: usize,
    (h, w): (usize, usize),
) {
    let mut block = [[0.0f32; LANES]; LANES];
    let (mut y, mut x) = (0, 0);
    for seg in (0..h * w).step_by(LANES) {
        let n = LANES.min(h * w - seg);
        for v in &mut block[..n] {
            *v = buf[y * width + x];
            x += 1;
            if x == w {
                (y, x) = (y + 1, 0);
            }
        }
        transpose(isa, &mut block);
        for (plane, row) in planes.iter_mut().zip(&block) {
            copy_lanes(&mut plane[seg..seg + n], row);
        }
    }
}

/// Splits t: (blocks, rows, cols) into its blocks x rows chunks of cols values and regroups them
/// by row: out[r][b] is (b, r, ..). Tasks that each own one row r can then run in parallel.
pub(super) fn chunks_by_row(t: &mut [f32], rows: usize, cols: usize) -> Vec<Vec<&mut [f32]>> {
    let mut out: Vec<Vec<&mut [f32]>> = (0..rows).map(|_| Vec::new()).collect();
    for (idx, chunk) in t.chunks_mut(cols).enumerate() {
        out[idx % rows].push(chunk);
    }
    out
}

/// Stores the transformed tile `out` (alpha^2 positions of `lanes` images) at column p of each
/// position's chunk.
#[inline(always)]
fn store(chunks: &mut [&mut [f32]], out: &[Lanes], p: usize, lanes: usize) {
    for (chunk, o) in chunks.iter_mut().zip(out) {
        copy_lanes(&mut chunk[p..p + lanes], o);
    }
}

/// dst = the first dst.len() lanes of src: one vector move when all [`LANES`] are (a copy of a
/// length known only at run time would be a call to `memcpy`).
#[inline(always)]
fn copy_lanes(dst: &mut [f32], src: &[f32]) {
    match <&mut Lanes>::try_from(&mut *dst) {
        Ok(whole) => *whole = src[..LANES].try_into().expect("LANES values"),
        Err(_) => dst.copy_from_slice(&src[..dst.len()]),
    }
}

/// The input transform of one channel c of a group: x_g: (G, cin, h, w) -> v_c: the alpha^2
/// chunks (xi, c, ..) of v: (alpha^2, cin, P), each P values. Tile (ty, tx) reads the
/// (alpha, alpha) patch at (m ty - 1, m tx - 1), zeros outside the map.
#[inline(always)]
fn input_transform_channel_impl(v_c: &mut [&mut [f32]], x_g: &[f32], c: usize, plan: &Plan) {
    let (isa, tile) = (simd::isa(), plan.tile);
    let (m, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    let images = x_g.len() / (plan.cin * plan.plane());
    // The map with one row and column of zeros before it and zeros after it up to the last
    // tile's patch.
    let width = m * tw + 2;
    let mut padded = vec![[0.0f32; LANES]; (m * th + 2) * width];
    let mut out = vec![[0.0f32; LANES]; alpha * alpha];
    for g0 in (0..images).step_by(LANES) {
        let lanes = LANES.min(images - g0);
        let plane = |l: usize| &x_g[((g0 + l) * plan.cin + c) * plan.plane()..][..plan.plane()];
        planes_to_lanes(isa, &mut padded, width, 1, (plan.h, plan.w), lanes, plane);
        for ty in 0..th {
            for tx in 0..tw {
                let at = m * ty * width + m * tx;
                let src = |a: usize, b: usize| &padded[at + a * width + b];
                lines::input(tile, src, &mut out);
                store(v_c, &out, (ty * tw + tx) * images + g0, lanes);
            }
        }
    }
}

multiversion! {
    /// [`input_transform_channel_impl`] compiled for `isa`.
    fn input_transform_channel = input_transform_channel_impl(
        v_c: &mut [&mut [f32]],
        x_g: &[f32],
        c: usize,
        plan: &Plan,
    )
}

multiversion! {
    /// [`grad_transform_channel_impl`] compiled for `isa`.
    fn grad_transform_channel = grad_transform_channel_impl(
        z_k: &mut [&mut [f32]],
        dy_g: &[f32],
        k: usize,
        plan: &Plan,
    )
}

multiversion! {
    /// [`output_channel_impl`] compiled for `isa`.
    pub(super) fn output_channel = output_channel_impl(
        planes: &mut [&mut [f32]],
        m: &[f32],
        k: usize,
        plan: &Plan,
        buf: &mut Vec<Lanes>,
    )
}

/// The input transform of a group, x_g: (G, cin, h, w) -> v: (alpha^2, cin, P), its channels
/// in parallel.
pub(super) fn input_transform(v: &mut [f32], x_g: &[f32], plan: &Plan) {
    let isa = simd::isa();
    let cols = v.len() / (plan.positions() * plan.cin);
    chunks_by_row(v, plan.cin, cols)
        .par_iter_mut()
        .enumerate()
        .for_each(|(c, v_c)| input_transform_channel(isa, v_c, x_g, c, plan));
}

/// Z = A dy_tile A^T for one output channel k of a group: dy_g: (G, K, h, w) -> z_k: the
/// alpha^2 chunks (xi, k, ..) of z: (alpha^2, K, P). Tile (ty, tx) is the (m, m) block at
/// (m ty, m tx); outputs past the map's edge count as 0.
#[inline(always)]
fn grad_transform_channel_impl(z_k: &mut [&mut [f32]], dy_g: &[f32], k: usize, plan: &Plan) {
    let (isa, tile) = (simd::isa(), plan.tile);
    let (m, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    let images = dy_g.len() / (plan.cout * plan.plane());
    // The map and zeros after it up to the last tile's extent.
    let width = m * tw;
    let mut padded = vec![[0.0f32; LANES]; m * th * width];
    let mut out = vec![[0.0f32; LANES]; alpha * alpha];
    for g0 in (0..images).step_by(LANES) {
        let lanes = LANES.min(images - g0);
        let plane = |l: usize| &dy_g[((g0 + l) * plan.cout + k) * plan.plane()..][..plan.plane()];
        planes_to_lanes(isa, &mut padded, width, 0, (plan.h, plan.w), lanes, plane);
        for ty in 0..th {
            for tx in 0..tw {
                let at = m * ty * width + m * tx;
                let src = |a: usize, b: usize| &padded[at + a * width + b];
                lines::grad(tile, src, &mut out);
                store(z_k, &out, (ty * tw + tx) * images + g0, lanes);
            }
        }
    }
}

/// The gradient transform of a group, dy_g: (G, K, h, w) -> z: (alpha^2, K, P), its channels
/// in parallel.
pub(super) fn grad_transform(z: &mut [f32], dy_g: &[f32], plan: &Plan) {
    let isa = simd::isa();
    let cols = z.len() / (plan.positions() * plan.cout);
    chunks_by_row(z, plan.cout, cols)
        .par_iter_mut()
        .enumerate()
        .for_each(|(k, z_k)| grad_transform_channel(isa, z_k, dy_g, k, plan));
}

/// The weight transform U = G g G^T of every kernel: w: (K, C, 3, 3) -> u: (alpha^2, rows, cols),
/// (rows, cols) = (C, K) or (K, C) by `orient`; its alpha rows i in parallel.
pub(super) fn weight_transform(
    u: &mut [f32],
    w: &[f32],
    k: usize,
    c: usize,
    orient: Orientation,
    tile: &Tile,
) {
    let (rows, cols) = match orient {
        Orientation::Forward => (c, k),
        Orientation::Adjoint => (k, c),
    };
    u.par_chunks_mut(tile.alpha * rows * cols)
        .enumerate()
        .for_each(|(i, u_i)| {
            let gi = tile.g_row(i);
            for r in 0..rows {
                for q in 0..cols {
                    let (kk, cc) = match orient {
                        Orientation::Forward => (q, r),
                        Orientation::Adjoint => (r, q),
                    };
                    let g = &w[(kk * c + cc) * 9..][..9];
                    let at = |a: usize, b: usize| match orient {
                        Orientation::Forward => g[a * 3 + b],
                        Orientation::Adjoint => g[(2 - a) * 3 + (2 - b)],
                    };
                    // t = row i of G g: t[b] = sum_a G[i][a] g[a][b].
                    let t: [f32; 3] = std::array::from_fn(|b| {
                        gi[0] * at(0, b) + gi[1] * at(1, b) + gi[2] * at(2, b)
                    });
                    for j in 0..tile.alpha {
                        let gj = tile.g_row(j);
                        u_i[(j * rows + r) * cols + q] = t[0] * gj[0] + t[1] * gj[1] + t[2] * gj[2];
                    }
                }
            }
        });
}

/// The output transform of one output channel k of a group: m: (alpha^2, cout, P) -> planes:
/// the group's G planes (h, w) of channel k, by image, overwritten; `buf` is scratch, grown as
/// needed.
///
/// For each tile of [`LANES`] images: its alpha^2 positions gathered from m (each a run of
/// consecutive columns) and y = A^T M A into a buffer of the map's pixels, each a [`Lanes`];
/// then each image's plane from its lane (outputs past the map's edge dropped).
#[inline(always)]
fn output_channel_impl(
    planes: &mut [&mut [f32]],
    m: &[f32],
    k: usize,
    plan: &Plan,
    buf: &mut Vec<Lanes>,
) {
    let (isa, tile) = (simd::isa(), plan.tile);
    let (ms, alpha) = (tile.m, tile.alpha);
    let positions = tile.positions();
    let (th, tw) = plan.tiles_hw();
    let w = plan.w;
    let images = planes.len();
    let cols = m.len() / (positions * plan.cout);
    // The outputs of LANES images, every tile's m x m (past the map's edge too), row by row.
    let width = ms * tw;
    buf.resize(positions + ms * th * width, [0.0; LANES]);
    let (src, y) = buf.split_at_mut(positions);
    let mut out = [[0.0f32; LANES]; 16];
    let out = &mut out[..ms * ms];
    for g0 in (0..images).step_by(LANES) {
        let lanes = LANES.min(images - g0);
        for ty in 0..th {
            for tx in 0..tw {
                let p = (ty * tw + tx) * images + g0;
                for (xi, s) in src.iter_mut().enumerate() {
                    copy_lanes(&mut s[..lanes], &m[(xi * plan.cout + k) * cols + p..]);
                }
                let src = &*src;
                lines::output(tile, |a, b| &src[a * alpha + b], out);
                for (a, out_a) in out.chunks_exact(ms).enumerate() {
                    y[(ms * ty + a) * width + ms * tx..][..ms].copy_from_slice(out_a);
                }
            }
        }
        // Each image's plane written in order from its lane.
        lanes_to_planes(isa, &mut planes[g0..g0 + lanes], y, width, (plan.h, w));
    }
}

/// dweight[k, c] += G^T S[:, k, c] G: (3, 3) from the alpha^2 positions of s: (alpha^2, K, C),
/// kc = K C.
pub(super) fn transform_s(dweight: &mut [f32], s: &[f32], kc: usize, tile: &Tile) {
    let alpha = tile.alpha;
    dweight.par_chunks_mut(9).enumerate().for_each(|(idx, dw)| {
        let at = |xi: usize| s[xi * kc + idx];
        // t = G^T S: (3, alpha); dw += t G.
        for a in 0..3 {
            let mut t = [0.0f32; MAX_ALPHA];
            for (q, t) in t[..alpha].iter_mut().enumerate() {
                *t = (0..alpha)
                    .map(|r| tile.g_row(r)[a] * at(r * alpha + q))
                    .sum();
            }
            for b in 0..3 {
                dw[a * 3 + b] += (0..alpha).map(|q| t[q] * tile.g_row(q)[b]).sum::<f32>();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns_in_every_instruction_set() {
        let block: Block = std::array::from_fn(|i| std::array::from_fn(|j| (i * 100 + j) as f32));
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            let mut t = block;
            transpose(isa, &mut t);
            for (i, row) in t.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    assert_eq!(v, block[j][i], "{isa}: ({i}, {j})");
                }
            }
        }
    }
}

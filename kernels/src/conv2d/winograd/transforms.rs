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

use super::matrices::{nonzeros, Tile};
use super::{Orientation, Plan};
use crate::simd::{self, multiversion};

/// The largest input tile side, F(4x4)'s 6.
const MAX_ALPHA: usize = 6;

/// Images side by side in the transforms' vectors: one AVX-512 register of f32, two AVX2 ones.
pub(super) const LANES: usize = 16;

/// One value (a pixel, a position of a transformed tile) of [`LANES`] images.
pub(super) type Lanes = [f32; LANES];

/// The nonzero (index, coefficient) pairs of each row of a small matrix.
pub(super) type Rows = Vec<Vec<(usize, f32)>>;

/// sum_t coef_t src_t, lane by lane, the terms added in the order given (the same on every
/// thread).
#[inline(always)]
fn combine<'a>(terms: impl IntoIterator<Item = (f32, &'a Lanes)>) -> Lanes {
    let mut acc = [0.0f32; LANES];
    for (coef, src) in terms {
        for (a, s) in acc.iter_mut().zip(src) {
            *a += coef * s;
        }
    }
    acc
}

/// out (n, n) = L src L^T, lane by lane, for the (n, k) matrix L whose rows' nonzeros are `rows`
/// and the (k, k) tile src(a, b): t = L src (n, k) first, then out[i][j] = sum_b L[j][b] t[i][b].
/// `t` holds at least n k values, `out` n^2.
#[inline(always)]
fn sandwich<'a>(
    rows: &[Vec<(usize, f32)>],
    k: usize,
    src: impl Fn(usize, usize) -> &'a Lanes,
    t: &mut [Lanes],
    out: &mut [Lanes],
) {
    let n = rows.len();
    for (i, row_i) in rows.iter().enumerate() {
        for b in 0..k {
            t[i * k + b] = combine(row_i.iter().map(|&(a, c)| (c, src(a, b))));
        }
    }
    for i in 0..n {
        let t_i = &t[i * k..][..k];
        for (j, row_j) in rows.iter().enumerate() {
            out[i * n + j] = combine(row_j.iter().map(|&(b, c)| (c, &t_i[b])));
        }
    }
}

/// The nonzero (index, coefficient) pairs of each row of a matrix, collected once per call.
fn nonzero_rows(rows: impl Iterator<Item = Vec<f32>>) -> Rows {
    rows.map(|r| nonzeros(r).collect()).collect()
}

/// The nonzero (index, coefficient) pairs of each row of A^T, for [`output_channel`].
pub(super) fn at_rows(tile: &Tile) -> Rows {
    nonzero_rows((0..tile.m).map(|a| tile.at_row(a).to_vec()))
}

/// Copies plane: (h, w) into lane `lane` of buf, a map `width` pixels wide, at (offset, offset).
/// Cells outside the plane are not touched: every plane of a call has the same size, so the
/// border a buffer started with (zeros) stays.
#[inline(always)]
fn to_lane(buf: &mut [Lanes], width: usize, offset: usize, plane: &[f32], w: usize, lane: usize) {
    for (y, row) in plane.chunks_exact(w).enumerate() {
        let dst = &mut buf[(y + offset) * width + offset..][..w];
        for (d, &v) in dst.iter_mut().zip(row) {
            d[lane] = v;
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
    let tile = plan.tile;
    let (m, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    let images = x_g.len() / (plan.cin * plan.plane());
    // The map with one row and column of zeros before it and zeros after it up to the last
    // tile's patch.
    let width = m * tw + 2;
    let mut padded = vec![[0.0f32; LANES]; (m * th + 2) * width];
    let rows = nonzero_rows((0..alpha).map(|j| tile.bt_row(j).to_vec()));
    let mut t = vec![[0.0f32; LANES]; alpha * alpha];
    let mut out = vec![[0.0f32; LANES]; alpha * alpha];
    for g0 in (0..images).step_by(LANES) {
        let lanes = LANES.min(images - g0);
        for l in 0..lanes {
            let plane = &x_g[((g0 + l) * plan.cin + c) * plan.plane()..][..plan.plane()];
            to_lane(&mut padded, width, 1, plane, plan.w, l);
        }
        for ty in 0..th {
            for tx in 0..tw {
                let at = m * ty * width + m * tx;
                let src = |a: usize, b: usize| &padded[at + a * width + b];
                sandwich(&rows, alpha, src, &mut t, &mut out);
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
        rows: &Rows,
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
    let tile = plan.tile;
    let (m, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    let images = dy_g.len() / (plan.cout * plan.plane());
    // The map and zeros after it up to the last tile's extent.
    let width = m * tw;
    let mut padded = vec![[0.0f32; LANES]; m * th * width];
    // Row i of A is column i of A^T.
    let rows = nonzero_rows((0..alpha).map(|j| tile.at_col(j).collect()));
    let mut t = vec![[0.0f32; LANES]; alpha * m];
    let mut out = vec![[0.0f32; LANES]; alpha * alpha];
    for g0 in (0..images).step_by(LANES) {
        let lanes = LANES.min(images - g0);
        for l in 0..lanes {
            let plane = &dy_g[((g0 + l) * plan.cout + k) * plan.plane()..][..plan.plane()];
            to_lane(&mut padded, width, 0, plane, plan.w, l);
        }
        for ty in 0..th {
            for tx in 0..tw {
                let at = m * ty * width + m * tx;
                let src = |a: usize, b: usize| &padded[at + a * width + b];
                sandwich(&rows, m, src, &mut t, &mut out);
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
/// (rows, cols) = (K, C) or (C, K) by `orient`; its alpha rows i in parallel.
pub(super) fn weight_transform(
    u: &mut [f32],
    w: &[f32],
    k: usize,
    c: usize,
    orient: Orientation,
    tile: &Tile,
) {
    let (rows, cols) = match orient {
        Orientation::Forward => (k, c),
        Orientation::Adjoint => (c, k),
    };
    u.par_chunks_mut(tile.alpha * rows * cols)
        .enumerate()
        .for_each(|(i, u_i)| {
            let gi = tile.g_row(i);
            for r in 0..rows {
                for q in 0..cols {
                    let (kk, cc) = match orient {
                        Orientation::Forward => (r, q),
                        Orientation::Adjoint => (q, r),
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
/// the group's G planes (h, w) of channel k, by image, overwritten; `rows` are [`at_rows`], `buf`
/// is scratch, grown as needed.
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
    rows: &Rows,
    buf: &mut Vec<Lanes>,
) {
    let tile = plan.tile;
    let (ms, alpha) = (tile.m, tile.alpha);
    let positions = tile.positions();
    let (th, tw) = plan.tiles_hw();
    let w = plan.w;
    let images = planes.len();
    let cols = m.len() / (positions * plan.cout);
    // The outputs of LANES images, every tile's m x m (past the map's edge too), row by row.
    let width = ms * tw;
    buf.resize(positions + ms * alpha + ms * th * width, [0.0; LANES]);
    let (src, rest) = buf.split_at_mut(positions);
    let (t, y) = rest.split_at_mut(ms * alpha);
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
                sandwich(rows, alpha, |a, b| &src[a * alpha + b], t, out);
                for (a, out_a) in out.chunks_exact(ms).enumerate() {
                    y[(ms * ty + a) * width + ms * tx..][..ms].copy_from_slice(out_a);
                }
            }
        }
        // Each image's plane written in order from its lane.
        for (l, plane) in planes[g0..g0 + lanes].iter_mut().enumerate() {
            for (row, y_row) in plane.chunks_exact_mut(w).zip(y.chunks_exact(width)) {
                for (o, v) in row.iter_mut().zip(y_row) {
                    *o = v[l];
                }
            }
        }
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

//! The four transforms of a Winograd pass, for either tile size ([`Tile`]): input V = B^T d B,
//! weight U = G g G^T, output y = A^T M A, and for backward-weight the gradient tile
//! Z = A dy A^T and the weight gradient G^T S G.
//!
//! The input and gradient transforms run along a row of tiles at a time and the output transform
//! along all the tiles of a group of images, as sums of whole vectors (`combine`), so the compiler
//! vectorises them; the small matrices' zero coefficients are left out before those loops. All
//! three are split between threads by channel: each task copies its channel's plane into the
//! padded phase-major layout once per image and writes the alpha^2 chunks of that channel.

use rayon::prelude::*;

use super::matrices::{nonzeros, Tile};
use super::{Orientation, Plan};
use crate::simd::{self, multiversion};

/// The largest input tile side, F(4x4)'s 6.
const MAX_ALPHA: usize = 6;

/// out[x] = sum_t coef_t src_t[x], the terms added in the order given (the same on every
/// thread). Each src is read over out's length.
#[inline(always)]
fn combine<'a>(out: &mut [f32], terms: impl IntoIterator<Item = (f32, &'a [f32])>) {
    let mut first = true;
    for (coef, src) in terms {
        let src = &src[..out.len()];
        if first {
            for (o, s) in out.iter_mut().zip(src) {
                *o = coef * s;
            }
            first = false;
        } else {
            for (o, s) in out.iter_mut().zip(src) {
                *o += coef * s;
            }
        }
    }
    if first {
        out.fill(0.0);
    }
}

/// The nonzero (index, coefficient) pairs of each row of a matrix, collected once per call.
fn nonzero_rows(rows: impl Iterator<Item = Vec<f32>>) -> Vec<Vec<(usize, f32)>> {
    rows.map(|r| nonzeros(r).collect()).collect()
}

/// The nonzero (index, coefficient) pairs of each row of A^T, for [`output_channel`].
pub(super) fn at_rows(tile: &Tile) -> Vec<Vec<(usize, f32)>> {
    nonzero_rows((0..tile.m).map(|a| tile.at_row(a).to_vec()))
}

/// One map plane with `offset` rows and columns of zeros before it (and zeros after it, up to
/// the last tile's extent), each row stored phase-major: padded column x = m q + r lies at
/// r l + q. Then column m tx + b of every tile of a row of tiles is the contiguous run
/// (b % m) l + b / m + tx, tx = 0, 1, ...
struct PhaseRows {
    m: usize,
    l: usize,
    offset: usize,
    data: Vec<f32>,
}

impl PhaseRows {
    /// `rows` rows of m l zeros.
    fn new(rows: usize, m: usize, l: usize, offset: usize) -> Self {
        PhaseRows {
            m,
            l,
            offset,
            data: vec![0.0; rows * m * l],
        }
    }

    /// Copies plane: (h, w) in. The border keeps its zeros: every plane of a call has the same
    /// size, so each one overwrites exactly the cells of the one before.
    #[inline(always)]
    fn fill(&mut self, plane: &[f32], w: usize) {
        let (m, l, offset) = (self.m, self.l, self.offset);
        for (y, row) in plane.chunks_exact(w).enumerate() {
            let dst = &mut self.data[(y + offset) * m * l..][..m * l];
            // Phase r takes input columns ix0, ix0 + m, ... (x = ix + offset = r mod m), from
            // q0 = x / m on: a strided gather, no division per value.
            for (r, phase) in dst.chunks_exact_mut(l).enumerate() {
                let ix0 = (r + m - offset % m) % m;
                let q0 = (ix0 + offset) / m;
                for (d, &v) in phase[q0..].iter_mut().zip(row.iter().skip(ix0).step_by(m)) {
                    *d = v;
                }
            }
        }
    }

    /// Padded row y, phase-major: m l values.
    #[inline(always)]
    fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.m * self.l..][..self.m * self.l]
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

/// The input transform of one channel c of a group: x_g: (G, cin, h, w) -> v_c: the alpha^2
/// chunks (xi, c, ..) of v: (alpha^2, cin, P), each P values; tile p = image tiles + ty tw + tx.
/// Tile (ty, tx) reads the (alpha, alpha) patch at (m ty - 1, m tx - 1), zeros outside the map.
///
/// Along a row of tiles: for each row i, t = row i of B^T times the alpha padded rows of the
/// patches, then V[i][j] = sum_b B^T[j][b] t[m tx + b] for every tx at once.
#[inline(always)]
fn input_transform_channel_impl(v_c: &mut [&mut [f32]], x_g: &[f32], c: usize, plan: &Plan) {
    let tile = plan.tile;
    let (m, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    // Columns 0 ..= m tw + 1 of the padded plane: phases of tw + 1.
    let l = tw + 1;
    let mut padded = PhaseRows::new(m * th + 2, m, l, 1);
    let mut t = vec![0.0f32; m * l];
    let rows = nonzero_rows((0..alpha).map(|j| tile.bt_row(j).to_vec()));
    for (img, x_n) in x_g.chunks_exact(plan.cin * plan.plane()).enumerate() {
        padded.fill(&x_n[c * plan.plane()..][..plan.plane()], plan.w);
        for ty in 0..th {
            let p0 = img * th * tw + ty * tw;
            for (i, row_i) in rows.iter().enumerate() {
                combine(
                    &mut t,
                    row_i.iter().map(|&(a, k)| (k, padded.row(m * ty + a))),
                );
                for (j, row_j) in rows.iter().enumerate() {
                    combine(
                        &mut v_c[i * alpha + j][p0..p0 + tw],
                        row_j.iter().map(|&(b, k)| (k, &t[(b % m) * l + b / m..])),
                    );
                }
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
        rows: &[Vec<(usize, f32)>],
        buf: &mut Vec<f32>,
    )
}

/// The input transform of a group, x_g: (G, cin, h, w) -> v: (alpha^2, cin, G tiles), its
/// channels in parallel.
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
///
/// Along a row of tiles, as [`input_transform_channel`]: row i of A is column i of A^T.
#[inline(always)]
fn grad_transform_channel_impl(z_k: &mut [&mut [f32]], dy_g: &[f32], k: usize, plan: &Plan) {
    let tile = plan.tile;
    let (m, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    let mut padded = PhaseRows::new(m * th, m, tw, 0);
    let mut t = vec![0.0f32; m * tw];
    let rows = nonzero_rows((0..alpha).map(|j| tile.at_col(j).collect()));
    for (img, dy_n) in dy_g.chunks_exact(plan.cout * plan.plane()).enumerate() {
        padded.fill(&dy_n[k * plan.plane()..][..plan.plane()], plan.w);
        for ty in 0..th {
            let p0 = img * th * tw + ty * tw;
            for (i, row_i) in rows.iter().enumerate() {
                combine(
                    &mut t,
                    row_i.iter().map(|&(a, c)| (c, padded.row(m * ty + a))),
                );
                for (j, row_j) in rows.iter().enumerate() {
                    combine(
                        &mut z_k[i * alpha + j][p0..p0 + tw],
                        row_j.iter().map(|&(b, c)| (c, &t[b * tw..])),
                    );
                }
            }
        }
    }
}

/// The gradient transform of a group, dy_g: (G, K, h, w) -> z: (alpha^2, K, G tiles), its
/// channels in parallel.
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
/// Along all the P tiles of the group at once (the channel's P values at each position are
/// contiguous in m, so the reads stream): t[a][j] = sum_i A^T[a][i] M[i][j], then
/// y[a][b] = sum_j A^T[b][j] t[a][j], each a vector over the tiles, scattered to the planes
/// (outputs past the map's edge dropped).
#[inline(always)]
fn output_channel_impl(
    planes: &mut [&mut [f32]],
    m: &[f32],
    k: usize,
    plan: &Plan,
    rows: &[Vec<(usize, f32)>],
    buf: &mut Vec<f32>,
) {
    let tile = plan.tile;
    let (ms, alpha) = (tile.m, tile.alpha);
    let (th, tw) = plan.tiles_hw();
    let (h, w) = (plan.h, plan.w);
    let cols = m.len() / (tile.positions() * plan.cout);
    let pos = |xi: usize| &m[(xi * plan.cout + k) * cols..][..cols];
    buf.resize((ms * alpha + 1) * cols, 0.0);
    let (t, y) = buf.split_at_mut(ms * alpha * cols);
    for (a, row_a) in rows.iter().enumerate() {
        for j in 0..alpha {
            let out = &mut t[(a * alpha + j) * cols..][..cols];
            combine(out, row_a.iter().map(|&(i, c)| (c, pos(i * alpha + j))));
        }
    }
    for a in 0..ms {
        for (b, row_b) in rows.iter().enumerate() {
            combine(
                y,
                row_b
                    .iter()
                    .map(|&(j, c)| (c, &t[(a * alpha + j) * cols..])),
            );
            for (plane, y_img) in planes.iter_mut().zip(y.chunks_exact(th * tw)) {
                for (ty, y_row) in y_img.chunks_exact(tw).enumerate() {
                    let oy = ms * ty + a;
                    if oy >= h {
                        break;
                    }
                    let out = &mut plane[oy * w..][..w];
                    for (ox, &v) in out.iter_mut().skip(b).step_by(ms).zip(y_row) {
                        *ox = v;
                    }
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

//! Winograd F(2x2, 3x3): 3x3, stride-1, pad-1 convolutions with 16 multiplications per 2x2 output
//! tile and channel pair instead of 36 (2.25x fewer), the rest being additions in the transforms.
//!
//! The output is cut into 2x2 tiles; tile (ty, tx) reads the 4x4 input patch d starting at
//! (2 ty - 1, 2 tx - 1) (0 outside the image, which is the padding). With the Lavin-Gray matrices
//! B^T (4x4), G (4x3) and A^T (2x4) below, and for one output channel k:
//!   y_tile = A^T [ sum_c (G w[k,c] G^T) . (B^T d_c B) ] A,
//! `.` the elementwise product of 4x4 matrices. Each of the 16 positions xi of that 4x4 product is
//! one GEMM over the channels: M_xi (K, P) = U_xi (K, C) V_xi (C, P), P the tiles of a group of
//! images, U = G w G^T and V = B^T d B.
//!
//! - forward: U from the weight, V from x, y from M through A.
//! - backward-data: for stride 1 and pad 1, dx is the forward convolution of dy by the weight with
//!   K and C swapped and each 3x3 kernel turned by 180 degrees; it runs through the forward.
//! - backward-weight: the adjoint of y_tile with respect to w[k,c] gives
//!   dw[k,c] += G^T [ sum_tiles (A dy_tile A^T) . (B^T d_c B) ] G: 16 GEMMs
//!   S_xi (K, C) += Z_xi (K, P) V_xi(C, P)^T with Z = A dy A^T, then G^T S G per (k, c).
//!
//! Rounding: the transforms add and subtract up to 16 values (and halve), so results differ from
//! the direct path by a few f32 roundings of the largest terms: not bit-identical to it, but
//! bit-identical for any thread count: groups of images run one after the other, and within a
//! group each transformed value, each output pixel and each GEMM output (itself deterministic) is
//! computed by one thread in a fixed order; backward-weight adds the groups in batch order.
//!
//! Layout of the transformed tensors: position-major, (16, rows, P), so that each position is a
//! contiguous row-major GEMM operand. The transforms fill them one row i of the 4x4 at a time
//! ((4, rows, P) contiguous), which is also how they are split between threads.

use rayon::prelude::*;

use super::{scratch, Conv2dDims};
use crate::gemm::{sgemm, Operand};
use crate::Result;

/// B^T, the input transform V = B^T d B:
///
/// ```text
/// [1  0 -1  0]
/// [0  1  1  0]
/// [0 -1  1  0]
/// [0  1  0 -1]
/// ```
///
/// Row i is (a, b, s): +1 at column a and s = +-1 at column b, so row i of B^T v is v[a] + s v[b]
/// (exact: the sign is the only multiplication).
const BT_ROWS: [(usize, usize, f32); 4] = [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];

/// G: the weight transform, U = G g G^T.
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// A^T, the output transform y = A^T M A, and the transform of a gradient tile, Z = A dy A^T.
const AT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// A^T m for a column m of 4 values: [m0 + m1 + m2, m1 - m2 - m3].
fn at_apply(m: [f32; 4]) -> [f32; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// The 16 positions of a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// The least number of tiles (GEMM columns) a group of images aims for: groups are transformed
/// and multiplied one after the other, each step split between the threads, so a group is as
/// large as the scratch memory allows (a deeper product runs closer to the GEMM's peak and, in
/// backward-weight, costs fewer passes over the (16, K, C) accumulator).
const GROUP_TILES: usize = 2048;

/// Whether Winograd F(2x2, 3x3) computes this convolution: a 3x3 kernel, stride 1, pad 1.
pub(super) fn applies(d: &Conv2dDims) -> bool {
    d.kh == 3 && d.kw == 3 && d.stride == 1 && d.pad == 1
}

/// The sizes one F(2x2, 3x3) pass works with: `cin` maps in, `cout` maps out, both (h, w).
#[derive(Debug, Clone, Copy)]
struct Plan {
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
}

impl Plan {
    /// Tiles down and across: ceil(h / 2), ceil(w / 2).
    fn tiles_hw(&self) -> (usize, usize) {
        (self.h.div_ceil(2), self.w.div_ceil(2))
    }

    fn tiles(&self) -> usize {
        let (th, tw) = self.tiles_hw();
        th * tw
    }

    /// Images per group: enough for [`GROUP_TILES`] tiles, at most the batch.
    fn group(&self) -> usize {
        GROUP_TILES.div_ceil(self.tiles()).min(self.n)
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// Rows i of the input transform of a group: x_g: (G, cin, h, w) -> v_i: (4, cin, P), position
/// (i, j) in block j, P = G tiles, tile p = image tiles + ty tw + tx.
///
/// Vectorised along a row of tiles: t = row i of B^T times the four padded input rows of the
/// tiles, then each position j is t[2 tx + a] + s t[2 tx + b] across the row.
fn input_transform_row(v_i: &mut [f32], x_g: &[f32], i: usize, plan: &Plan) {
    let (th, tw) = plan.tiles_hw();
    let cols = v_i.len() / (4 * plan.cin);
    let (ra, rb, rs) = BT_ROWS[i];
    // One plane with a zero border: row and column 0 are the padding, and it reaches
    // 2 th + 2 rows and 2 tw + 2 columns, the last patches' extent.
    let pw = 2 * tw + 2;
    let mut padded = vec![0.0f32; (2 * th + 2) * pw];
    let mut t = vec![0.0f32; pw];
    for c in 0..plan.cin {
        for (img, x_n) in x_g.chunks_exact(plan.cin * plan.plane()).enumerate() {
            let plane = &x_n[c * plan.plane()..][..plan.plane()];
            for (y, row) in plane.chunks_exact(plan.w).enumerate() {
                padded[(y + 1) * pw + 1..][..plan.w].copy_from_slice(row);
            }
            for ty in 0..th {
                let pa = &padded[(2 * ty + ra) * pw..][..pw];
                let pb = &padded[(2 * ty + rb) * pw..][..pw];
                for ((t, a), b) in t.iter_mut().zip(pa).zip(pb) {
                    *t = a + rs * b;
                }
                let p0 = img * th * tw + ty * tw;
                for (j, &(ca, cb, cs)) in BT_ROWS.iter().enumerate() {
                    let out = &mut v_i[(j * plan.cin + c) * cols + p0..][..tw];
                    for (tx, o) in out.iter_mut().enumerate() {
                        *o = t[2 * tx + ca] + cs * t[2 * tx + cb];
                    }
                }
            }
        }
    }
}

/// The input transform of a group, x_g: (G, cin, h, w) -> v: (16, cin, G tiles), its four rows in
/// parallel.
fn input_transform(v: &mut [f32], x_g: &[f32], plan: &Plan) {
    v.par_chunks_mut(v.len() / 4)
        .enumerate()
        .for_each(|(i, v_i)| input_transform_row(v_i, x_g, i, plan));
}

/// Which weight the transform reads for the (row, col) = (out, in) channels of its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orientation {
    /// u: (16, K, C) from w[k, c] as stored: the forward.
    Forward,
    /// u: (16, C, K) from w[k, c] turned by 180 degrees: backward-data.
    Adjoint,
}

/// The weight transform U = G g G^T of every kernel: w: (K, C, 3, 3) -> u: (16, rows, cols),
/// (rows, cols) = (K, C) or (C, K) by `orient`.
fn weight_transform(u: &mut [f32], w: &[f32], k: usize, c: usize, orient: Orientation) {
    let (rows, cols) = match orient {
        Orientation::Forward => (k, c),
        Orientation::Adjoint => (c, k),
    };
    u.par_chunks_mut(4 * rows * cols)
        .enumerate()
        .for_each(|(i, u_i)| {
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
                    let t: [f32; 3] =
                        std::array::from_fn(|b| (0..3).map(|a| G[i][a] * at(a, b)).sum());
                    for (j, gj) in G.iter().enumerate() {
                        u_i[(j * rows + r) * cols + q] = t[0] * gj[0] + t[1] * gj[1] + t[2] * gj[2];
                    }
                }
            }
        });
}

/// The output transform of one plane: m: (16, cout, P) -> plane: (h, w) of image `img` and output
/// channel k, overwritten.
fn output_plane(plane: &mut [f32], m: &[f32], img: usize, k: usize, plan: &Plan) {
    let (th, tw) = plan.tiles_hw();
    let (h, w) = (plan.h, plan.w);
    let cols = m.len() / (POSITIONS * plan.cout);
    // The image's tiles at each position xi, for output channel k.
    let at: [&[f32]; POSITIONS] =
        std::array::from_fn(|xi| &m[(xi * plan.cout + k) * cols + img * th * tw..][..th * tw]);
    for ty in 0..th {
        for tx in 0..tw {
            let p = ty * tw + tx;
            // t = A^T M, (2, 4), a column s at a time; y = t A, row a at a time.
            let t: [[f32; 2]; 4] = std::array::from_fn(|s| {
                at_apply([at[s][p], at[4 + s][p], at[8 + s][p], at[12 + s][p]])
            });
            let rows = [0, 1].map(|a| at_apply(t.map(|col| col[a])));
            for (a, y) in rows.into_iter().enumerate() {
                let oy = 2 * ty + a;
                if oy >= h {
                    break;
                }
                for (b, v) in y.into_iter().enumerate() {
                    let ox = 2 * tx + b;
                    if ox < w {
                        plane[oy * w + ox] = v;
                    }
                }
            }
        }
    }
}

/// The forward core: x: (n, cin, h, w), u: (16, cout, cin) -> y: (n, cout, h, w), overwritten.
/// Groups of images one after the other; within a group the transforms split their rows or
/// planes between threads and the GEMM its output blocks, so every value is computed by one
/// thread in a fixed order.
fn forward_core(
    y: &mut [f32],
    x: &[f32],
    u: &[f32],
    v: &mut [f32],
    m: &mut [f32],
    plan: &Plan,
) -> Result<()> {
    let group = plan.group();
    for (y_g, x_g) in y
        .chunks_mut(group * plan.cout * plan.plane())
        .zip(x.chunks(group * plan.cin * plan.plane()))
    {
        let cols = x_g.len() / (plan.cin * plan.plane()) * plan.tiles();
        let v = &mut v[..POSITIONS * plan.cin * cols];
        let m = &mut m[..POSITIONS * plan.cout * cols];
        input_transform(v, x_g, plan);
        for ((u_xi, v_xi), m_xi) in u
            .chunks_exact(plan.cout * plan.cin)
            .zip(v.chunks_exact(plan.cin * cols))
            .zip(m.chunks_exact_mut(plan.cout * cols))
        {
            // M_xi (cout, P) = U_xi (cout, cin) V_xi (cin, P).
            sgemm(
                1.0,
                Operand::new(u_xi, plan.cout, plan.cin),
                Operand::new(v_xi, plan.cin, cols),
                0.0,
                m_xi,
            )?;
        }
        let m = &*m;
        y_g.par_chunks_mut(plan.plane())
            .enumerate()
            .for_each(|(idx, plane)| {
                output_plane(plane, m, idx / plan.cout, idx % plan.cout, plan)
            });
    }
    Ok(())
}

/// x: (N, C, H, W), weight: (K, C, 3, 3) -> y: (N, K, H, W), overwritten.
pub(super) fn forward(y: &mut [f32], x: &[f32], weight: &[f32], d: &Conv2dDims) -> Result<()> {
    let plan = Plan {
        n: d.n,
        cin: d.c,
        cout: d.k,
        h: d.h,
        w: d.w,
    };
    transformed(y, x, weight, Orientation::Forward, &plan)
}

/// dy: (N, K, H, W), weight: (K, C, 3, 3) -> dx: (N, C, H, W), overwritten: the forward of dy by
/// the kernels turned by 180 degrees, K and C swapped.
pub(super) fn backward_data(
    dx: &mut [f32],
    dy: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let plan = Plan {
        n: d.n,
        cin: d.k,
        cout: d.c,
        h: d.h,
        w: d.w,
    };
    transformed(dx, dy, weight, Orientation::Adjoint, &plan)
}

/// Transforms the weight (`orient`) into scratch and runs [`forward_core`]:
/// x: (n, cin, h, w) -> y: (n, cout, h, w), overwritten.
fn transformed(
    y: &mut [f32],
    x: &[f32],
    weight: &[f32],
    orient: Orientation,
    plan: &Plan,
) -> Result<()> {
    let (k, c) = match orient {
        Orientation::Forward => (plan.cout, plan.cin),
        Orientation::Adjoint => (plan.cin, plan.cout),
    };
    let max_cols = plan.group() * plan.tiles();
    let u_len = POSITIONS * k * c;
    let v_len = POSITIONS * plan.cin * max_cols;
    scratch::with(u_len + v_len + POSITIONS * plan.cout * max_cols, |buf| {
        let (u, rest) = buf.split_at_mut(u_len);
        let (v, m) = rest.split_at_mut(v_len);
        weight_transform(u, weight, k, c, orient);
        forward_core(y, x, u, v, m, plan)
    })
}

/// Rows i of Z = A dy_tile A^T of a group: dy_g: (G, K, h, w) -> z_i: (4, K, P), position (i, j)
/// in block j. Outputs past the map's edge (odd h or w) count as 0.
///
/// Vectorised along a row of tiles, as [`input_transform_row`]: row i of A is column i of A^T.
fn grad_transform_row(z_i: &mut [f32], dy_g: &[f32], i: usize, plan: &Plan) {
    let (th, tw) = plan.tiles_hw();
    let cols = z_i.len() / (4 * plan.cout);
    // One plane padded with zeros to 2 th rows and 2 tw columns.
    let pw = 2 * tw;
    let mut padded = vec![0.0f32; 2 * th * pw];
    let mut t = vec![0.0f32; pw];
    for k in 0..plan.cout {
        for (img, dy_n) in dy_g.chunks_exact(plan.cout * plan.plane()).enumerate() {
            let plane = &dy_n[k * plan.plane()..][..plan.plane()];
            for (y, row) in plane.chunks_exact(plan.w).enumerate() {
                padded[y * pw..][..plan.w].copy_from_slice(row);
            }
            for ty in 0..th {
                let r0 = &padded[2 * ty * pw..][..pw];
                let r1 = &padded[(2 * ty + 1) * pw..][..pw];
                for ((t, a), b) in t.iter_mut().zip(r0).zip(r1) {
                    *t = AT[0][i] * a + AT[1][i] * b;
                }
                let p0 = img * th * tw + ty * tw;
                for j in 0..4 {
                    let out = &mut z_i[(j * plan.cout + k) * cols + p0..][..tw];
                    for (tx, o) in out.iter_mut().enumerate() {
                        *o = AT[0][j] * t[2 * tx] + AT[1][j] * t[2 * tx + 1];
                    }
                }
            }
        }
    }
}

/// dy: (N, K, H, W), x: (N, C, H, W) -> dweight: (K, C, 3, 3), accumulated.
///
/// For each group in batch order: S_xi (K, C) += Z_xi (K, P) V_xi (C, P)^T; then
/// dweight[k, c] += G^T S[:, k, c] G.
pub(super) fn backward_weight(
    dweight: &mut [f32],
    dy: &[f32],
    x: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let plan = Plan {
        n: d.n,
        cin: d.c,
        cout: d.k,
        h: d.h,
        w: d.w,
    };
    let group = plan.group();
    let max_cols = group * plan.tiles();
    let (v_len, z_len) = (POSITIONS * d.c * max_cols, POSITIONS * d.k * max_cols);
    scratch::with(v_len + z_len + POSITIONS * d.k * d.c, |buf| {
        let (v, rest) = buf.split_at_mut(v_len);
        let (z, s) = rest.split_at_mut(z_len);
        s.fill(0.0);
        accumulate_s(s, v, z, dy, x, &plan)?;
        transform_s(dweight, s, d.k * d.c);
        Ok(())
    })
}

/// S_xi (K, C) += Z_xi (K, P) V_xi (C, P)^T for every group of images, in batch order, with the
/// scratch v: (16, C, P) and z: (16, K, P); dy: (N, K, H, W), x: (N, C, H, W).
fn accumulate_s(
    s: &mut [f32],
    v: &mut [f32],
    z: &mut [f32],
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
) -> Result<()> {
    let (c, k, group) = (plan.cin, plan.cout, plan.group());
    for (x_g, dy_g) in x
        .chunks(group * c * plan.plane())
        .zip(dy.chunks(group * k * plan.plane()))
    {
        let cols = x_g.len() / (c * plan.plane()) * plan.tiles();
        let v = &mut v[..POSITIONS * c * cols];
        let z = &mut z[..POSITIONS * k * cols];
        input_transform(v, x_g, plan);
        z.par_chunks_mut(4 * k * cols)
            .enumerate()
            .for_each(|(i, z_i)| grad_transform_row(z_i, dy_g, i, plan));
        for ((z_xi, v_xi), s_xi) in z
            .chunks_exact(k * cols)
            .zip(v.chunks_exact(c * cols))
            .zip(s.chunks_exact_mut(k * c))
        {
            sgemm(
                1.0,
                Operand::new(z_xi, k, cols),
                Operand::new(v_xi, c, cols).t(),
                1.0,
                s_xi,
            )?;
        }
    }
    Ok(())
}

/// dweight[k, c] += G^T S[:, k, c] G: (3, 3) from the 16 positions of s: (16, K, C), kc = K C.
fn transform_s(dweight: &mut [f32], s: &[f32], kc: usize) {
    dweight.par_chunks_mut(9).enumerate().for_each(|(idx, dw)| {
        let at = |xi: usize| s[xi * kc + idx];
        // t = G^T S: (3, 4); dw += t G.
        for a in 0..3 {
            let t: [f32; 4] =
                std::array::from_fn(|q| (0..4).map(|r| G[r][a] * at(r * 4 + q)).sum());
            for b in 0..3 {
                dw[a * 3 + b] += (0..4).map(|q| t[q] * G[q][b]).sum::<f32>();
            }
        }
    });
}

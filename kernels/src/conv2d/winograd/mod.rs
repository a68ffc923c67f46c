//! Winograd F(m x m, 3x3) for m = 2 and m = 4: 3x3, stride-1, pad-1 convolutions with alpha^2
//! multiplications per m x m output tile and channel pair instead of 9 m^2 (alpha = m + 2: 16
//! instead of 36 for F(2x2), 36 instead of 144 for F(4x4)), the rest being additions in the
//! transforms.
//!
//! The output is cut into m x m tiles; tile (ty, tx) reads the (alpha, alpha) input patch d
//! starting at (m ty - 1, m tx - 1) (0 outside the image, which is the padding). With the matrices
//! B^T (alpha, alpha), G (alpha, 3) and A^T (m, alpha) of [`matrices`], and for one output
//! channel k:
//!   y_tile = A^T [ sum_c (G w[k,c] G^T) . (B^T d_c B) ] A,
//! `.` the elementwise product of (alpha, alpha) matrices. Each of the alpha^2 positions xi of that
//! product is one GEMM over the channels: M_xi (K, P) = U_xi (K, C) V_xi (C, P), P the tiles of a
//! group of images, U = G w G^T and V = B^T d B. Maps whose sides are not multiples of m get
//! partial tiles on the bottom and right: their patches read zeros past the edge and their outputs
//! past it are dropped.
//!
//! - forward: U from the weight, V from x, y from M through A.
//! - backward-data: for stride 1 and pad 1, dx is the forward convolution of dy by the weight with
//!   K and C swapped and each 3x3 kernel turned by 180 degrees; it runs through the forward.
//! - backward-weight: the adjoint of y_tile with respect to w[k,c] gives
//!   dw[k,c] += G^T [ sum_tiles (A dy_tile A^T) . (B^T d_c B) ] G: alpha^2 GEMMs
//!   S_xi (K, C) += Z_xi (K, P) V_xi(C, P)^T with Z = A dy A^T (the gradient of outputs past the
//!   map's edge being 0), then G^T S G per (k, c).
//!
//! Rounding: the transforms add and subtract up to 2 alpha scaled values (F(4x4)'s coefficients
//! reach 8), so results differ from the direct path by a few f32 roundings of the largest terms
//! (the tests derive the bound): not bit-identical to it, but bit-identical for any thread count:
//! groups of images run one after the other, and within a group each transformed value, each
//! output pixel and each GEMM output (itself deterministic) is computed by one thread in a fixed
//! order; backward-weight adds the groups in batch order.
//!
//! Layout of the transformed tensors: position-major, (alpha^2, rows, P), so that each position
//! is a contiguous row-major GEMM operand, its P columns tile-major (tile t of image g of a group
//! of G images is column t G + g: the transforms put 16 images in a vector's lanes). The
//! transforms are split between threads by channel: one task writes (or, for the output, reads)
//! the alpha^2 chunks of P values of its channel.

mod lines;
mod matrices;
#[cfg(test)]
mod tests;
mod transforms;

use rayon::prelude::*;

use super::{scratch, Conv2dDims};
use crate::gemm::{sgemm_serial, shallow_at, Operand};
use crate::Result;
pub(super) use matrices::{Tile, F2, F4};
use transforms::{
    chunks_by_row, grad_transform, input_transform, output_channel, transform_s, weight_transform,
    LANES,
};

/// Whether Winograd F(m x m, 3x3) computes this convolution: a 3x3 kernel, stride 1, pad 1.
pub(super) fn applies(d: &Conv2dDims) -> bool {
    d.kh == 3 && d.kw == 3 && d.stride == 1 && d.pad == 1
}

/// The sizes one pass works with: `cin` maps in, `cout` maps out, both (h, w), tiled by `tile`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tile: &'static Tile,
    n: usize,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
}

impl Plan {
    /// The plan of convolution `d` run forward: its C maps in, its K maps out.
    fn forward(tile: &'static Tile, d: &Conv2dDims) -> Plan {
        Plan {
            tile,
            n: d.n,
            cin: d.c,
            cout: d.k,
            h: d.h,
            w: d.w,
        }
    }

    /// The same maps with in and out swapped: backward-data runs the forward of dy.
    fn swapped(self) -> Plan {
        Plan {
            cin: self.cout,
            cout: self.cin,
            ..self
        }
    }

    /// Tiles down and across: ceil(h / m), ceil(w / m).
    fn tiles_hw(&self) -> (usize, usize) {
        (self.h.div_ceil(self.tile.m), self.w.div_ceil(self.tile.m))
    }

    fn tiles(&self) -> usize {
        let (th, tw) = self.tiles_hw();
        th * tw
    }

    /// Images per group: enough for the tile's `group_tiles` tiles, at most the batch. Groups are
    /// transformed and multiplied one after the other, each step split between the threads, so a
    /// group is as large as the scratch memory allows (a deeper product runs closer to the GEMM's
    /// peak and, in backward-weight, costs fewer passes over the (alpha^2, K, C) accumulator).
    /// Rounded up to a whole number of [`LANES`] images, the transforms' vectors.
    fn group(&self) -> usize {
        let images = self.tile.group_tiles.div_ceil(self.tiles());
        images.next_multiple_of(LANES).min(self.n)
    }

    fn plane(&self) -> usize {
        self.h * self.w
    }

    fn positions(&self) -> usize {
        self.tile.positions()
    }
}

/// Which weight the transform reads for the (row, col) = (in, out) channels of its product. U
/// is stored transposed, a row per input channel: the (depth, rows) operand of
/// [`shallow_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orientation {
    /// u: (alpha^2, C, K) from w[k, c] as stored: the forward.
    Forward,
    /// u: (alpha^2, K, C) from w[k, c] turned by 180 degrees: backward-data.
    Adjoint,
}

/// The forward core: x: (n, cin, h, w), u: (alpha^2, cin, cout) -> y: (n, cout, h, w),
/// overwritten. Groups of images one after the other; within a group the transforms split their
/// channels between threads and the positions' products are shared out whole (each GEMM on one
/// thread: 16 or 36 independent products keep two threads busy without the fork-join inside every
/// product, 7 to 10% faster on a seed step), so every value is computed by one thread in a fixed
/// order.
fn forward_core(y: &mut [f32], x: &[f32], u: &[f32], v: &mut [f32], m: &mut [f32], plan: &Plan) {
    let group = plan.group();
    let positions = plan.positions();
    let isa = crate::simd::isa();
    for (y_g, x_g) in y
        .chunks_mut(group * plan.cout * plan.plane())
        .zip(x.chunks(group * plan.cin * plan.plane()))
    {
        let cols = x_g.len() / (plan.cin * plan.plane()) * plan.tiles();
        let v = &mut v[..positions * plan.cin * cols];
        let m = &mut m[..positions * plan.cout * cols];
        input_transform(v, x_g, plan);
        // M_xi (cout, P) = U_xi^T V_xi, U_xi (cin, cout): the positions split between the
        // threads, each product on one thread, by the register tiles of the linear layers'
        // shallow products (the `gemm` crate ran these 32- to 64-deep ones at about a fifth of
        // the FMA peak; its microkernel was half of a 32x32 layer's time).
        let v = &*v;
        m.par_chunks_exact_mut(plan.cout * cols)
            .zip(u.par_chunks_exact(plan.cout * plan.cin))
            .zip(v.par_chunks_exact(plan.cin * cols))
            .for_each(|((m_xi, u_xi), v_xi)| {
                let dims = (plan.cout, cols, plan.cin);
                shallow_at(isa, (u_xi, v_xi), m_xi, dims, false, false)
            });
        // The planes of y_g: (G, cout, h, w) regrouped by output channel, one task each.
        let m = &*m;
        chunks_by_row(y_g, plan.cout, plan.plane())
            .par_iter_mut()
            .enumerate()
            .for_each_init(Vec::new, |buf, (k, planes)| {
                output_channel(isa, planes, m, k, plan, buf)
            });
    }
}

/// x: (N, C, H, W), weight: (K, C, 3, 3) -> y: (N, K, H, W), overwritten.
pub(super) fn forward(
    tile: &'static Tile,
    y: &mut [f32],
    x: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    transformed(y, x, weight, Orientation::Forward, &Plan::forward(tile, d))
}

/// dy: (N, K, H, W), weight: (K, C, 3, 3) -> dx: (N, C, H, W), overwritten: the forward of dy by
/// the kernels turned by 180 degrees, K and C swapped.
pub(super) fn backward_data(
    tile: &'static Tile,
    dx: &mut [f32],
    dy: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let plan = Plan::forward(tile, d).swapped();
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
    let positions = plan.positions();
    let max_cols = plan.group() * plan.tiles();
    let u_len = positions * k * c;
    let v_len = positions * plan.cin * max_cols;
    scratch::with(u_len + v_len + positions * plan.cout * max_cols, |buf| {
        let (u, rest) = buf.split_at_mut(u_len);
        let (v, m) = rest.split_at_mut(v_len);
        weight_transform(u, weight, k, c, orient, plan.tile);
        forward_core(y, x, u, v, m, plan);
    });
    Ok(())
}

/// dy: (N, K, H, W), x: (N, C, H, W) -> dweight: (K, C, 3, 3), accumulated.
///
/// For each group in batch order: S_xi (K, C) += Z_xi (K, P) V_xi (C, P)^T; then
/// dweight[k, c] += G^T S[:, k, c] G.
pub(super) fn backward_weight(
    tile: &'static Tile,
    dweight: &mut [f32],
    dy: &[f32],
    x: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let plan = Plan::forward(tile, d);
    let positions = plan.positions();
    let max_cols = plan.group() * plan.tiles();
    let (v_len, z_len) = (positions * d.c * max_cols, positions * d.k * max_cols);
    scratch::with(v_len + z_len + positions * d.k * d.c, |buf| {
        let (v, rest) = buf.split_at_mut(v_len);
        let (z, s) = rest.split_at_mut(z_len);
        s.fill(0.0);
        accumulate_s(s, v, z, dy, x, &plan)?;
        transform_s(dweight, s, d.k * d.c, tile);
        Ok(())
    })
}

/// S_xi (K, C) += Z_xi (K, P) V_xi (C, P)^T for every group of images, in batch order, with the
/// scratch v: (alpha^2, C, P) and z: (alpha^2, K, P); dy: (N, K, H, W), x: (N, C, H, W).
fn accumulate_s(
    s: &mut [f32],
    v: &mut [f32],
    z: &mut [f32],
    dy: &[f32],
    x: &[f32],
    plan: &Plan,
) -> Result<()> {
    let (c, k, group) = (plan.cin, plan.cout, plan.group());
    let positions = plan.positions();
    for (x_g, dy_g) in x
        .chunks(group * c * plan.plane())
        .zip(dy.chunks(group * k * plan.plane()))
    {
        let cols = x_g.len() / (c * plan.plane()) * plan.tiles();
        let v = &mut v[..positions * c * cols];
        let z = &mut z[..positions * k * cols];
        input_transform(v, x_g, plan);
        grad_transform(z, dy_g, plan);
        let (z, v) = (&*z, &*v);
        s.par_chunks_exact_mut(k * c)
            .zip(z.par_chunks_exact(k * cols))
            .zip(v.par_chunks_exact(c * cols))
            .try_for_each(|((s_xi, z_xi), v_xi)| {
                sgemm_serial(
                    1.0,
                    Operand::new(z_xi, k, cols),
                    Operand::new(v_xi, c, cols).t(),
                    1.0,
                    s_xi,
                )
            })?;
    }
    Ok(())
}

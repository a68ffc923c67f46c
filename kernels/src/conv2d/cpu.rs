//! CPU convolution: im2col and one GEMM per image (forward, backward-data), or per group of
//! images (backward-weight).
//!
//! Threads: forward and backward-data run the images of the batch in parallel, each with its own
//! im2col buffer and a single-threaded GEMM; every output value is computed by exactly one image's
//! work, in a fixed order. Backward-weight sums over the batch: it walks fixed groups of images in
//! order and lets the GEMM (bit-identical for any thread count) split each group's product.

use rayon::prelude::*;

use super::Conv2dDims;
use crate::gemm::{sgemm, sgemm_serial, Operand};
use crate::Result;

/// Backward-weight multiplies groups of images at once, so that the depth of its GEMM (the pixels
/// of the group) is at least this many columns even on small maps (8x8, 4x4): a shallow product
/// would spend its time reading and writing dweight rather than multiplying.
const GROUP_COLUMNS: usize = 512;

impl Conv2dDims {
    /// Rows of the im2col matrix: C KH KW.
    fn col_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per image, the columns of the im2col matrix: OH OW.
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    fn x_image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn y_image_len(&self) -> usize {
        self.k * self.pixels()
    }

    /// The outputs o in [lo, hi) of an axis of `out` outputs whose input o * stride + tap - pad
    /// lies inside [0, len): the rest read the padding.
    fn inside(&self, out: usize, len: usize, tap: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = (self.pad.saturating_sub(tap)).div_ceil(s);
        let hi = (len + self.pad).saturating_sub(tap).div_ceil(s).min(out);
        (lo.min(hi), hi)
    }
}

/// Fills `dst`, (OH OW), with row r = (c, ky, kx) of the im2col matrix of one image
/// x_n: (C, H, W): dst[oy OW + ox] = x_n[c, oy stride + ky - pad, ox stride + kx - pad], 0 outside.
fn im2col_row(dst: &mut [f32], x_n: &[f32], r: usize, d: &Conv2dDims) {
    let (c, ky, kx) = (r / (d.kh * d.kw), r / d.kw % d.kh, r % d.kw);
    let plane = &x_n[c * d.h * d.w..][..d.h * d.w];
    let (oy_lo, oy_hi) = d.inside(d.oh, d.h, ky);
    let (ox_lo, ox_hi) = d.inside(d.ow, d.w, kx);
    for (oy, out) in dst.chunks_exact_mut(d.ow).enumerate() {
        if !(oy_lo..oy_hi).contains(&oy) {
            out.fill(0.0);
            continue;
        }
        let src = &plane[(oy * d.stride + ky - d.pad) * d.w..][..d.w];
        out[..ox_lo].fill(0.0);
        out[ox_hi..].fill(0.0);
        if ox_lo == ox_hi {
            continue;
        }
        // ix = ox stride + kx - pad, inside the row for ox in [ox_lo, ox_hi).
        let ix0 = ox_lo * d.stride + kx - d.pad;
        if d.stride == 1 {
            out[ox_lo..ox_hi].copy_from_slice(&src[ix0..ix0 + (ox_hi - ox_lo)]);
        } else {
            for (o, s) in out[ox_lo..ox_hi]
                .iter_mut()
                .zip(src[ix0..].iter().step_by(d.stride))
            {
                *o = *s;
            }
        }
    }
}

/// The im2col matrix of one image: x_n: (C, H, W) -> col: (C KH KW, OH OW).
fn im2col(col: &mut [f32], x_n: &[f32], d: &Conv2dDims) {
    for (r, row) in col.chunks_exact_mut(d.pixels()).enumerate() {
        im2col_row(row, x_n, r, d);
    }
}

/// The adjoint of [`im2col`]: dcol: (C KH KW, OH OW) -> dx_n: (C, H, W), overwritten; each input
/// pixel receives the sum of the columns that read it, taps in order (ky, kx) for every channel.
fn col2im(dx_n: &mut [f32], dcol: &[f32], d: &Conv2dDims) {
    dx_n.fill(0.0);
    for (r, row) in dcol.chunks_exact(d.pixels()).enumerate() {
        let (c, ky, kx) = (r / (d.kh * d.kw), r / d.kw % d.kh, r % d.kw);
        let plane = &mut dx_n[c * d.h * d.w..][..d.h * d.w];
        let (oy_lo, oy_hi) = d.inside(d.oh, d.h, ky);
        let (ox_lo, ox_hi) = d.inside(d.ow, d.w, kx);
        if ox_lo == ox_hi {
            continue;
        }
        let ix0 = ox_lo * d.stride + kx - d.pad;
        for oy in oy_lo..oy_hi {
            let src = &row[oy * d.ow..][ox_lo..ox_hi];
            let dst = &mut plane[(oy * d.stride + ky - d.pad) * d.w..][..d.w];
            if d.stride == 1 {
                for (o, s) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                    *o += *s;
                }
            } else {
                for (o, s) in dst[ix0..].iter_mut().step_by(d.stride).zip(src) {
                    *o += *s;
                }
            }
        }
    }
}

/// x: (N, C, H, W), weight: (K, C KH KW) -> y: (N, K, OH OW), overwritten.
pub(super) fn forward(y: &mut [f32], x: &[f32], weight: &[f32], d: &Conv2dDims) -> Result<()> {
    let (rows, pixels) = (d.col_rows(), d.pixels());
    let w = Operand::new(weight, d.k, rows);
    y.par_chunks_mut(d.y_image_len())
        .zip(x.par_chunks(d.x_image_len()))
        .try_for_each_init(
            || vec![0.0; rows * pixels],
            |col, (y_n, x_n)| {
                im2col(col, x_n, d);
                // y_n: (K, OH OW) = W (K, C KH KW) col (C KH KW, OH OW).
                sgemm_serial(1.0, w, Operand::new(col, rows, pixels), 0.0, y_n)
            },
        )
}

/// dy: (N, K, OH OW), weight: (K, C KH KW) -> dx: (N, C, H, W), overwritten.
pub(super) fn backward_data(
    dx: &mut [f32],
    dy: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let (rows, pixels) = (d.col_rows(), d.pixels());
    let w = Operand::new(weight, d.k, rows);
    dx.par_chunks_mut(d.x_image_len())
        .zip(dy.par_chunks(d.y_image_len()))
        .try_for_each_init(
            || vec![0.0; rows * pixels],
            |dcol, (dx_n, dy_n)| {
                // dcol: (C KH KW, OH OW) = W^T (C KH KW, K) dy_n (K, OH OW).
                sgemm_serial(1.0, w.t(), Operand::new(dy_n, d.k, pixels), 0.0, dcol)?;
                col2im(dx_n, dcol, d);
                Ok(())
            },
        )
}

/// dy: (N, K, OH OW), x: (N, C, H, W) -> dweight: (K, C KH KW), accumulated.
///
/// For each group of G images in batch order (G fixed by the shapes): col_g: (C KH KW, G OH OW)
/// holds the images' im2col matrices side by side, dy_g: (K, G OH OW) their output gradients, and
/// dweight += dy_g col_g^T.
pub(super) fn backward_weight(
    dweight: &mut [f32],
    dy: &[f32],
    x: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let (rows, pixels) = (d.col_rows(), d.pixels());
    let group = GROUP_COLUMNS.div_ceil(pixels).clamp(1, d.n);
    let mut col = vec![0.0; rows * group * pixels];
    let mut dy_group = if group > 1 {
        vec![0.0; d.k * group * pixels]
    } else {
        Vec::new()
    };
    for first in (0..d.n).step_by(group) {
        let images = group.min(d.n - first);
        let cols = images * pixels;
        let x_images = &x[first * d.x_image_len()..][..images * d.x_image_len()];
        let col = &mut col[..rows * cols];
        col.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            for (dst, x_n) in row
                .chunks_exact_mut(pixels)
                .zip(x_images.chunks_exact(d.x_image_len()))
            {
                im2col_row(dst, x_n, r, d);
            }
        });
        let dy_images = &dy[first * d.y_image_len()..][..images * d.y_image_len()];
        let dy_g = if images == 1 {
            dy_images
        } else {
            let dy_g = &mut dy_group[..d.k * cols];
            dy_g.par_chunks_mut(cols).enumerate().for_each(|(k, row)| {
                for (j, dst) in row.chunks_exact_mut(pixels).enumerate() {
                    dst.copy_from_slice(&dy_images[(j * d.k + k) * pixels..][..pixels]);
                }
            });
            dy_g
        };
        // dweight (K, C KH KW) += dy_g (K, G OH OW) col_g^T (G OH OW, C KH KW).
        sgemm(
            1.0,
            Operand::new(dy_g, d.k, cols),
            Operand::new(col, rows, cols).t(),
            1.0,
            dweight,
        )?;
    }
    Ok(())
}

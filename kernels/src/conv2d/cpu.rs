//! CPU convolution: im2col and one GEMM per group of images.
//!
//! A group is G consecutive images of the batch, G fixed by the shapes: 1 on large maps, more on
//! small ones (8x8, 4x4), so that every GEMM has at least [`GROUP_COLUMNS`] columns of output
//! pixels; a thin product runs far below the GEMM's peak. The group's im2col matrices sit side by
//! side in col_g: (C KH KW, G OH OW), and its images' y or dy likewise in (K, G OH OW).
//!
//! Threads: forward and backward-data run the groups in parallel, each with its own buffers and a
//! single-threaded GEMM; every output value comes from exactly one group's work. Backward-weight
//! sums over the batch: it walks the groups in batch order and lets the GEMM (bit-identical for any
//! thread count) split each group's product. So no result depends on the number of threads.

use rayon::prelude::*;

use super::{scratch, Conv2dDims};
use crate::gemm::{sgemm, sgemm_serial, Operand};
use crate::Result;

/// The least number of output pixels (GEMM columns) a group aims for.
const GROUP_COLUMNS: usize = 512;

/// Forward and backward-data keep at least this many groups in a batch (when it has that many
/// images), so that the threads have groups to share.
const MIN_PARALLEL_GROUPS: usize = 4;

impl Conv2dDims {
    /// Rows of the im2col matrix: C KH KW.
    fn col_rows(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per image, the columns of one image's im2col matrix: OH OW.
    fn pixels(&self) -> usize {
        self.oh * self.ow
    }

    fn x_image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn y_image_len(&self) -> usize {
        self.k * self.pixels()
    }

    /// Images per group: enough for [`GROUP_COLUMNS`] pixels, at most `n / min_groups` (rounded
    /// up) and at least 1.
    fn group(&self, min_groups: usize) -> usize {
        GROUP_COLUMNS
            .div_ceil(self.pixels())
            .min(self.n.div_ceil(min_groups))
            .max(1)
    }

    /// The outputs o in [lo, hi) of an axis of `out` outputs whose input o * stride + tap - pad
    /// lies inside [0, len): the rest read the padding.
    fn inside(&self, out: usize, len: usize, tap: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = (self.pad.saturating_sub(tap)).div_ceil(s);
        let hi = (len + self.pad).saturating_sub(tap).div_ceil(s).min(out);
        (lo.min(hi), hi)
    }

    /// (c, ky, kx) of im2col row r.
    fn tap(&self, r: usize) -> (usize, usize, usize) {
        (r / (self.kh * self.kw), r / self.kw % self.kh, r % self.kw)
    }
}

/// Fills `dst`, (OH OW), with row r = (c, ky, kx) of the im2col matrix of one image
/// x_n: (C, H, W): dst[oy OW + ox] = x_n[c, oy stride + ky - pad, ox stride + kx - pad], 0 outside.
fn im2col_row(dst: &mut [f32], x_n: &[f32], r: usize, d: &Conv2dDims) {
    let (c, ky, kx) = d.tap(r);
    let plane = &x_n[c * d.h * d.w..][..d.h * d.w];
    let (oy_lo, oy_hi) = d.inside(d.oh, d.h, ky);
    let (ox_lo, ox_hi) = d.inside(d.ow, d.w, kx);
    for (oy, out) in dst.chunks_exact_mut(d.ow).enumerate() {
        if !(oy_lo..oy_hi).contains(&oy) {
            out.fill(0.0);
            continue;
        }
        out[..ox_lo].fill(0.0);
        out[ox_hi..].fill(0.0);
        if ox_lo == ox_hi {
            continue;
        }
        let src = &plane[(oy * d.stride + ky - d.pad) * d.w..][..d.w];
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

/// The im2col matrix of a group of images: x_g: (G, C, H, W) -> col_g: (C KH KW, G OH OW),
/// image j in columns [j OH OW, (j + 1) OH OW).
fn im2col(col_g: &mut [f32], x_g: &[f32], d: &Conv2dDims) {
    let cols = col_g.len() / d.col_rows();
    for (r, row) in col_g.chunks_exact_mut(cols).enumerate() {
        im2col_group_row(row, x_g, r, d);
    }
}

/// Row r of [`im2col`]: the row r of each image's matrix, side by side.
fn im2col_group_row(row: &mut [f32], x_g: &[f32], r: usize, d: &Conv2dDims) {
    for (dst, x_n) in row
        .chunks_exact_mut(d.pixels())
        .zip(x_g.chunks_exact(d.x_image_len()))
    {
        im2col_row(dst, x_n, r, d);
    }
}

/// The adjoint of [`im2col`] for image j of the group: dcol_g: (C KH KW, G OH OW) ->
/// dx_n: (C, H, W), overwritten. Each input pixel receives the sum of the columns that read it,
/// in row order (c, ky, kx).
fn col2im(dx_n: &mut [f32], dcol_g: &[f32], j: usize, d: &Conv2dDims) {
    dx_n.fill(0.0);
    let cols = dcol_g.len() / d.col_rows();
    for (r, row) in dcol_g.chunks_exact(cols).enumerate() {
        let row = &row[j * d.pixels()..][..d.pixels()];
        let (c, ky, kx) = d.tap(r);
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

/// Row k of images' (G, K, OH OW) tensors side by side: row: (G OH OW) <- images[:, k, :].
fn gather_row(row: &mut [f32], images: &[f32], k: usize, d: &Conv2dDims) {
    for (dst, img) in row
        .chunks_exact_mut(d.pixels())
        .zip(images.chunks_exact(d.y_image_len()))
    {
        dst.copy_from_slice(&img[k * d.pixels()..][..d.pixels()]);
    }
}

/// Puts a group's images side by side: images: (G, K, OH OW) -> grouped: (K, G OH OW).
fn gather(grouped: &mut [f32], images: &[f32], d: &Conv2dDims) {
    let cols = grouped.len() / d.k;
    for (k, row) in grouped.chunks_exact_mut(cols).enumerate() {
        gather_row(row, images, k, d);
    }
}

/// The inverse of [`gather`]: grouped: (K, G OH OW) -> images: (G, K, OH OW).
fn scatter(images: &mut [f32], grouped: &[f32], d: &Conv2dDims) {
    let cols = grouped.len() / d.k;
    for (j, img) in images.chunks_exact_mut(d.y_image_len()).enumerate() {
        for (k, dst) in img.chunks_exact_mut(d.pixels()).enumerate() {
            dst.copy_from_slice(&grouped[k * cols + j * d.pixels()..][..d.pixels()]);
        }
    }
}

/// x: (N, C, H, W), weight: (K, C KH KW) -> y: (N, K, OH OW), overwritten.
pub(super) fn forward(y: &mut [f32], x: &[f32], weight: &[f32], d: &Conv2dDims) -> Result<()> {
    let (rows, group) = (d.col_rows(), d.group(MIN_PARALLEL_GROUPS));
    let w = Operand::new(weight, d.k, rows);
    y.par_chunks_mut(group * d.y_image_len())
        .zip(x.par_chunks(group * d.x_image_len()))
        .try_for_each_init(
            || (vec![0.0; rows * group * d.pixels()], Vec::new()),
            |(col, y_buf), (y_g, x_g)| {
                let cols = y_g.len() / d.k;
                let col = &mut col[..rows * cols];
                im2col(col, x_g, d);
                // y_g: (K, G OH OW) = W (K, C KH KW) col_g (C KH KW, G OH OW).
                let col = Operand::new(col, rows, cols);
                if cols == d.pixels() {
                    return sgemm_serial(1.0, w, col, 0.0, y_g);
                }
                y_buf.resize(y_g.len(), 0.0);
                sgemm_serial(1.0, w, col, 0.0, y_buf)?;
                scatter(y_g, y_buf, d);
                Ok(())
            },
        )
}

/// dy: (N, K, OH OW), weight: (K, C KH KW) -> dx: (N, C, H, W), overwritten.
///
/// A convolution that keeps the map's size (stride 1, an odd square kernel, pad (KH - 1) / 2)
/// runs as the forward of dy by the kernels turned by 180 degrees with K and C swapped, which
/// costs what the forward costs. Any other goes through W^T dy and col2im (the GEMM's
/// transposed operand and col2im's scattered sums made it up to 2.4x slower than the forward on
/// 1024 channels at 4x4).
pub(super) fn backward_data(
    dx: &mut [f32],
    dy: &[f32],
    weight: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    if d.stride == 1 && d.kh == d.kw && d.kh % 2 == 1 && 2 * d.pad + 1 == d.kh {
        let taps = d.kh * d.kw;
        let adjoint = Conv2dDims {
            c: d.k,
            k: d.c,
            ..*d
        };
        return scratch::with(weight.len(), |turned| {
            // turned: (C, K, KH, KW), turned[c, k, t] = weight[k, c, KH KW - 1 - t].
            turned
                .par_chunks_mut(d.k * taps)
                .enumerate()
                .for_each(|(c, row)| {
                    for (k, kernel) in row.chunks_exact_mut(taps).enumerate() {
                        let src = &weight[(k * d.c + c) * taps..][..taps];
                        for (t, v) in kernel.iter_mut().enumerate() {
                            *v = src[taps - 1 - t];
                        }
                    }
                });
            forward(dx, dy, turned, &adjoint)
        });
    }
    let (rows, group) = (d.col_rows(), d.group(MIN_PARALLEL_GROUPS));
    let w = Operand::new(weight, d.k, rows);
    dx.par_chunks_mut(group * d.x_image_len())
        .zip(dy.par_chunks(group * d.y_image_len()))
        .try_for_each_init(
            || (vec![0.0; rows * group * d.pixels()], Vec::new()),
            |(dcol, dy_buf), (dx_g, dy_g)| {
                let cols = dy_g.len() / d.k;
                let dy_g = if cols == d.pixels() {
                    dy_g
                } else {
                    dy_buf.resize(dy_g.len(), 0.0);
                    gather(dy_buf, dy_g, d);
                    dy_buf
                };
                // dcol_g: (C KH KW, G OH OW) = W^T (C KH KW, K) dy_g (K, G OH OW).
                let dcol = &mut dcol[..rows * cols];
                sgemm_serial(1.0, w.t(), Operand::new(dy_g, d.k, cols), 0.0, dcol)?;
                for (j, dx_n) in dx_g.chunks_exact_mut(d.x_image_len()).enumerate() {
                    col2im(dx_n, dcol, j, d);
                }
                Ok(())
            },
        )
}

/// dy: (N, K, OH OW), x: (N, C, H, W) -> dweight: (K, C KH KW), accumulated.
///
/// For each group in batch order: dweight += dy_g col_g^T, with dy_g: (K, G OH OW) and
/// col_g: (C KH KW, G OH OW).
pub(super) fn backward_weight(
    dweight: &mut [f32],
    dy: &[f32],
    x: &[f32],
    d: &Conv2dDims,
) -> Result<()> {
    let (rows, group) = (d.col_rows(), d.group(1));
    let mut col = vec![0.0; rows * group * d.pixels()];
    let mut dy_buf = vec![
        0.0;
        if group > 1 {
            d.k * group * d.pixels()
        } else {
            0
        }
    ];
    for (x_g, dy_g) in x
        .chunks(group * d.x_image_len())
        .zip(dy.chunks(group * d.y_image_len()))
    {
        let cols = dy_g.len() / d.k;
        let col = &mut col[..rows * cols];
        col.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, row)| im2col_group_row(row, x_g, r, d));
        let dy_g = if cols == d.pixels() {
            dy_g
        } else {
            let buf = &mut dy_buf[..d.k * cols];
            buf.par_chunks_mut(cols)
                .enumerate()
                .for_each(|(k, row)| gather_row(row, dy_g, k, d));
            buf
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

//! 2-D convolution (cross-correlation, as every framework computes it), no bias, NCHW.
//!
//! All three passes are one GEMM per image (or per group of images) on the image's im2col
//! matrix, whose row (c, ky, kx) holds, for every output pixel (oy, ox), the input value the
//! kernel tap (ky, kx) of channel c sees there (0 in the padding):
//! - forward: y_n = W col(x_n), with W viewed as (K, C KH KW);
//! - backward-data: dx_n = col2im(W^T dy_n), col2im summing each column back onto the pixels it
//!   was read from;
//! - backward-weight: dW += sum_n dy_n col(x_n)^T.
//!
//! 3x3 convolutions with stride 1 and pad 1 (every convolution of the network) can run through
//! Winograd F(2x2, 3x3) or F(4x4, 3x3) instead (`winograd/`), 2.25x or 4x fewer multiplications;
//! the im2col path stays the reference. [`Conv2dAlgo::choose`] picks one by a measured rule, and
//! the `_using` entry points take one explicitly.
//!
//! # Shapes
//! x: (N, C, H, W), weight: (K, C, KH, KW) -> y: (N, K, OH, OW), with
//! OH = (H + 2 pad - KH) / stride + 1 and OW = (W + 2 pad - KW) / stride + 1.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
mod scratch;
pub mod tc;
#[cfg(test)]
mod tests;
mod winograd;

use tensor_core::{Shape, Tensor};

use crate::cuda::{dispatch, TensorBackend};
use crate::{Error, Result};

/// Stride and zero padding of a convolution, the same on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub stride: usize,
    /// Zeros added on each side (top, bottom, left and right).
    pub pad: usize,
}

impl Conv2dGeom {
    /// Stride 1 and 1 pixel of padding: a 3x3 kernel keeps the size of the map (SAME).
    pub const SAME_3X3: Conv2dGeom = Conv2dGeom { stride: 1, pad: 1 };
}

/// Every size of one convolution, checked to fit together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dDims {
    /// The sizes of a convolution of x: (N, C, H, W) by weight: (K, C, KH, KW).
    ///
    /// # Errors
    /// [`Error::Shape`] if either is not rank 4, the channel counts differ, an axis is 0, or the
    /// kernel is larger than the padded input; [`Error::Invalid`] for a stride of 0.
    pub fn new(op: &'static str, x: &[usize], weight: &[usize], geom: Conv2dGeom) -> Result<Self> {
        let (&[n, c, h, w], &[k, wc, kh, kw]) = (x, weight) else {
            return Err(Error::Shape {
                op,
                msg: format!(
                    "x {} and weight {} must both be rank 4",
                    Shape::from(x),
                    Shape::from(weight)
                ),
            });
        };
        let (xs, ws) = (Shape::from(x), Shape::from(weight));
        let Conv2dGeom { stride, pad } = geom;
        if stride == 0 {
            return Err(Error::Invalid {
                op,
                msg: "stride 0".into(),
            });
        }
        if c != wc {
            return Err(Error::Shape {
                op,
                msg: format!("x {xs} has {c} channels, weight {ws} expects {wc}"),
            });
        }
        if [n, c, h, w, k, kh, kw].contains(&0) {
            return Err(Error::Shape {
                op,
                msg: format!("x {xs} or weight {ws} has an empty axis"),
            });
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            return Err(Error::Shape {
                op,
                msg: format!("weight {ws}: kernel {kh}x{kw} is larger than x {xs} padded by {pad}"),
            });
        }
        Ok(Conv2dDims {
            n,
            c,
            h,
            w,
            k,
            kh,
            kw,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
            stride,
            pad,
        })
    }

    /// (N, C, H, W).
    pub fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// (K, C, KH, KW).
    pub fn weight_dims(&self) -> [usize; 4] {
        [self.k, self.c, self.kh, self.kw]
    }

    /// (N, K, OH, OW).
    pub fn y_dims(&self) -> [usize; 4] {
        [self.n, self.k, self.oh, self.ow]
    }

    /// Floating-point operations of one pass (each pass costs the same): 2 N K C KH KW OH OW.
    pub fn flops(&self) -> u64 {
        2 * [self.n, self.k, self.c, self.kh, self.kw, self.oh, self.ow]
            .iter()
            .map(|&d| d as u64)
            .product::<u64>()
    }
}

/// [`Conv2dAlgo::choose`] takes Winograd only with at least this many input and output channels.
pub const WINOGRAD_MIN_CHANNELS: usize = 128;

/// The three passes of a convolution, for [`Conv2dAlgo::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conv2dPass {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// How a convolution is computed. All give the same values up to f32 rounding (Winograd rounds
/// worse: see `winograd.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conv2dAlgo {
    /// im2col and one GEMM per group of images: any kernel, stride and padding. The reference.
    Direct,
    /// Winograd F(2x2, 3x3): 2.25x fewer multiplications than direct; only a 3x3 kernel with
    /// stride 1 and pad 1.
    Winograd2,
    /// Winograd F(4x4, 3x3): 4x fewer multiplications than direct (1.78x fewer than F(2x2)) and
    /// less transformed data per output; the same geometry as [`Conv2dAlgo::Winograd2`].
    Winograd4,
}

impl Conv2dAlgo {
    /// Every algorithm, the reference first.
    pub const ALL: [Conv2dAlgo; 3] = [
        Conv2dAlgo::Direct,
        Conv2dAlgo::Winograd2,
        Conv2dAlgo::Winograd4,
    ];

    /// A short lower-case name: `direct`, `winograd2`, `winograd4` (benchmark ids, messages).
    pub fn name(self) -> &'static str {
        match self {
            Conv2dAlgo::Direct => "direct",
            Conv2dAlgo::Winograd2 => "winograd2",
            Conv2dAlgo::Winograd4 => "winograd4",
        }
    }

    /// The fastest algorithm for `pass` of `d`, by a rule measured with
    /// `cargo bench -p benches --bench conv` on the seed and small presets' layers (batch 64,
    /// 2-core AMD EPYC, 2026-11-26, a loaded shared machine: figures and their noise in
    /// BENCHMARKS.md, "Winograd F(4x4, 3x3)"):
    /// - not a 3x3, stride-1, pad-1 convolution: [`Conv2dAlgo::Direct`], the only one that can;
    /// - fewer than [`WINOGRAD_MIN_CHANNELS`] channels on either side: direct. The transforms
    ///   cost in proportion to (C + K) per tile and the products C K per tile, so Winograd only
    ///   pays with many channels: with C = 3 (the first convolution) it ran 1.4 to 9x slower than
    ///   direct on every pass, with 32 and 64 channels (the small preset's blocks 1 and 2) 5 to
    ///   10% slower over the three passes;
    /// - forward and backward-data on maps of 8x8 or more: [`Conv2dAlgo::Winograd4`], 1.1 to 4.7x
    ///   direct's rate (mostly 1.4 to 2.2x) on the seed's 128 (32x32), 256 (16x16) and 512 (8x8)
    ///   channel layers, ahead of F(2x2) in most readings;
    /// - backward-weight: F(4x4) on maps of 16x16 or more, [`Conv2dAlgo::Winograd2`] on 8x8,
    ///   direct below. Its products are only N tiles deep (one F(4x4) tile covers a 4x4 map), and
    ///   it keeps alpha^2 K C partial sums: on 512 channels at 8x8, F(2x2) ran at 85 and 107
    ///   GFLOP/s against F(4x4)'s 64 and 78 (two readings of three), and on 1024 at 4x4 direct
    ///   at 74 against 50 (F(2x2)) and 22 (F(4x4)) on one thread;
    /// - forward and backward-data on maps under 8x8: F(2x2) with 512 channels or more (the
    ///   seed's 1024 at 4x4: F(2x2) 1.2 to 1.7x direct, F(4x4) 1.1 to 1.4x), direct below (the
    ///   small preset's 256 at 4x4: no Winograd gain).
    pub fn choose(d: &Conv2dDims, pass: Conv2dPass) -> Conv2dAlgo {
        let channels = d.c.min(d.k);
        let side = d.h.min(d.w);
        if !winograd::applies(d) || channels < WINOGRAD_MIN_CHANNELS {
            return Conv2dAlgo::Direct;
        }
        match pass {
            Conv2dPass::Forward | Conv2dPass::BackwardData if side >= 8 => Conv2dAlgo::Winograd4,
            Conv2dPass::Forward | Conv2dPass::BackwardData if channels >= 512 => {
                Conv2dAlgo::Winograd2
            }
            Conv2dPass::BackwardWeight if side >= 16 => Conv2dAlgo::Winograd4,
            Conv2dPass::BackwardWeight if side >= 8 => Conv2dAlgo::Winograd2,
            _ => Conv2dAlgo::Direct,
        }
    }

    /// Whether this algorithm computes `d`.
    pub fn computes(self, d: &Conv2dDims) -> bool {
        match self {
            Conv2dAlgo::Direct => true,
            Conv2dAlgo::Winograd2 | Conv2dAlgo::Winograd4 => winograd::applies(d),
        }
    }

    /// `Err` if this algorithm cannot compute `d`.
    fn check(self, op: &'static str, d: &Conv2dDims) -> Result<()> {
        let tile = match self {
            Conv2dAlgo::Direct => return Ok(()),
            Conv2dAlgo::Winograd2 => "2x2",
            Conv2dAlgo::Winograd4 => "4x4",
        };
        if !self.computes(d) {
            return Err(Error::Invalid {
                op,
                msg: format!(
                    "Winograd F({tile}, 3x3) needs a 3x3 kernel, stride 1 and pad 1, not {}x{}, \
                     stride {}, pad {}",
                    d.kh, d.kw, d.stride, d.pad
                ),
            });
        }
        Ok(())
    }
}

/// Convolution forward, through [`Conv2dAlgo::choose`].
/// x: (N, C, H, W), weight: (K, C, KH, KW) -> y: (N, K, OH, OW), overwritten.
///
/// # Errors
/// [`Error::Shape`] naming the shapes if x and weight do not fit (see [`Conv2dDims::new`]) or y is
/// not (N, K, OH, OW); [`Error::Invalid`] for a stride of 0.
pub fn conv2d_forward(y: &mut Tensor, x: &Tensor, weight: &Tensor, geom: Conv2dGeom) -> Result<()> {
    conv2d_forward_using(None, y, x, weight, geom)
}

/// As [`conv2d_forward`], with the algorithm `algo` (`None`: [`Conv2dAlgo::choose`]).
///
/// # Errors
/// As [`conv2d_forward`]; [`Error::Invalid`] if `algo` cannot compute this convolution.
pub fn conv2d_forward_using(
    algo: Option<Conv2dAlgo>,
    y: &mut Tensor,
    x: &Tensor,
    weight: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "conv2d_forward";
    let d = Conv2dDims::new(OP, x.dims(), weight.dims(), geom)?;
    y.expect_shape(OP, "y", &d.y_dims())?;
    let algo = algo.unwrap_or_else(|| Conv2dAlgo::choose(&d, Conv2dPass::Forward));
    algo.check(OP, &d)?;
    // On a CUDA device the implicit-GEMM kernels run whatever `algo` says.
    dispatch!(OP, [("y", y), ("x", x), ("weight", weight)],
        cpu => {
            let (y, x, w) = (y.as_mut_slice()?, x.as_slice()?, weight.as_slice()?);
            match algo {
                Conv2dAlgo::Direct => cpu::forward(y, x, w, &d),
                Conv2dAlgo::Winograd2 => winograd::forward(&winograd::F2, y, x, w, &d),
                Conv2dAlgo::Winograd4 => winograd::forward(&winograd::F4, y, x, w, &d),
            }
        },
        cuda |b| => {
            let (yb, xb, wb) = (b.buf_mut(OP, y)?, b.buf(OP, x)?, b.buf(OP, weight)?);
            cuda::conv2d_forward(b, yb, xb, wb, x.dims(), weight.dims(), geom)
        },
    )
}

/// Convolution backward with respect to the input, through [`Conv2dAlgo::choose`].
/// dy: (N, K, OH, OW), weight: (K, C, KH, KW) -> dx: (N, C, H, W), overwritten.
///
/// # Errors
/// [`Error::Shape`] naming the shapes if dx and weight do not fit or dy is not the output shape
/// they give; [`Error::Invalid`] for a stride of 0.
pub fn conv2d_backward_data(
    dx: &mut Tensor,
    dy: &Tensor,
    weight: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    conv2d_backward_data_using(None, dx, dy, weight, geom)
}

/// As [`conv2d_backward_data`], with the algorithm `algo` (`None`: [`Conv2dAlgo::choose`]).
///
/// # Errors
/// As [`conv2d_backward_data`]; [`Error::Invalid`] if `algo` cannot compute this convolution.
pub fn conv2d_backward_data_using(
    algo: Option<Conv2dAlgo>,
    dx: &mut Tensor,
    dy: &Tensor,
    weight: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "conv2d_backward_data";
    let d = Conv2dDims::new(OP, dx.dims(), weight.dims(), geom)?;
    dy.expect_shape(OP, "dy", &d.y_dims())?;
    let algo = algo.unwrap_or_else(|| Conv2dAlgo::choose(&d, Conv2dPass::BackwardData));
    algo.check(OP, &d)?;
    dispatch!(OP, [("dx", dx), ("dy", dy), ("weight", weight)],
        cpu => {
            let (dx, dy, w) = (dx.as_mut_slice()?, dy.as_slice()?, weight.as_slice()?);
            match algo {
                Conv2dAlgo::Direct => cpu::backward_data(dx, dy, w, &d),
                Conv2dAlgo::Winograd2 => winograd::backward_data(&winograd::F2, dx, dy, w, &d),
                Conv2dAlgo::Winograd4 => winograd::backward_data(&winograd::F4, dx, dy, w, &d),
            }
        },
        cuda |b| => {
            let (dxb, dyb, wb) = (b.buf_mut(OP, dx)?, b.buf(OP, dy)?, b.buf(OP, weight)?);
            cuda::conv2d_backward_data(b, dxb, dyb, wb, &d.x_dims(), weight.dims(), geom)
        },
    )
}

/// Convolution backward with respect to the weight.
/// dy: (N, K, OH, OW), x: (N, C, H, W) -> dweight: (K, C, KH, KW), accumulated (`+=`).
///
/// The sum over the batch runs in a fixed order, so the result does not depend on the number of
/// threads.
///
/// # Errors
/// [`Error::Shape`] naming the shapes if x and dweight do not fit or dy is not the output shape
/// they give; [`Error::Invalid`] for a stride of 0.
pub fn conv2d_backward_weight(
    dweight: &mut Tensor,
    dy: &Tensor,
    x: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    conv2d_backward_weight_using(None, dweight, dy, x, geom)
}

/// As [`conv2d_backward_weight`], with the algorithm `algo` (`None`: [`Conv2dAlgo::choose`]).
///
/// # Errors
/// As [`conv2d_backward_weight`]; [`Error::Invalid`] if `algo` cannot compute this convolution.
pub fn conv2d_backward_weight_using(
    algo: Option<Conv2dAlgo>,
    dweight: &mut Tensor,
    dy: &Tensor,
    x: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "conv2d_backward_weight";
    let d = Conv2dDims::new(OP, x.dims(), dweight.dims(), geom)?;
    dy.expect_shape(OP, "dy", &d.y_dims())?;
    let algo = algo.unwrap_or_else(|| Conv2dAlgo::choose(&d, Conv2dPass::BackwardWeight));
    algo.check(OP, &d)?;
    dispatch!(OP, [("dweight", dweight), ("dy", dy), ("x", x)],
        cpu => {
            let (dw, dy, x) = (dweight.as_mut_slice()?, dy.as_slice()?, x.as_slice()?);
            match algo {
                Conv2dAlgo::Direct => cpu::backward_weight(dw, dy, x, &d),
                Conv2dAlgo::Winograd2 => winograd::backward_weight(&winograd::F2, dw, dy, x, &d),
                Conv2dAlgo::Winograd4 => winograd::backward_weight(&winograd::F4, dw, dy, x, &d),
            }
        },
        cuda |b| => {
            let (dwb, dyb, xb) = (b.buf_mut(OP, dweight)?, b.buf(OP, dy)?, b.buf(OP, x)?);
            cuda::conv2d_backward_weight(b, dwb, dyb, xb, x.dims(), &d.weight_dims(), geom)
        },
    )
}

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
//! Winograd F(2x2, 3x3) or F(4x4, 3x3) instead (`winograd/`), 2.25x or 4x fewer multiplications,
//! and convolutions that keep the map's size through the sliding kernels (`sliding/`), a direct
//! convolution without im2col in the CPU's widest worthwhile vectors ([`crate::simd`]); the
//! im2col path stays the reference. On the CPU, a call without an algorithm takes the one
//! [`calibrate`] measured fastest on this machine, or [`Conv2dAlgo::choose`]'s fixed rule with
//! calibration off; the `_using` entry points take one explicitly.
//!
//! # Shapes
//! x: (N, C, H, W), weight: (K, C, KH, KW) -> y: (N, K, OH, OW), with
//! OH = (H + 2 pad - KH) / stride + 1 and OW = (W + 2 pad - KW) / stride + 1.

pub mod calibrate;
mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
mod scratch;
mod sliding;
pub mod tc;
#[cfg(test)]
mod tests;
mod winograd;

use tensor_core::{Shape, Tensor};

use crate::cuda::{dispatch, TensorBackend};
use crate::precision::cuda::bf16_copy;
use crate::precision::Precision;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Direct convolution without im2col, vectors along the output pixels, each kernel tap a
    /// masked load of the input at a fixed offset (`sliding/`), in the instruction set
    /// [`crate::simd::isa`] picks: stride 1 and an odd square kernel with "same" padding.
    Sliding,
    /// Winograd F(2x2, 3x3): 2.25x fewer multiplications than direct; only a 3x3 kernel with
    /// stride 1 and pad 1.
    Winograd2,
    /// Winograd F(4x4, 3x3): 4x fewer multiplications than direct (1.78x fewer than F(2x2)) and
    /// less transformed data per output; the same geometry as [`Conv2dAlgo::Winograd2`].
    Winograd4,
}

impl Conv2dAlgo {
    /// Every algorithm, the reference first.
    pub const ALL: [Conv2dAlgo; 4] = [
        Conv2dAlgo::Direct,
        Conv2dAlgo::Sliding,
        Conv2dAlgo::Winograd2,
        Conv2dAlgo::Winograd4,
    ];

    /// A short lower-case name: `direct`, `sliding`, `winograd2`, `winograd4` (benchmark ids,
    /// messages).
    pub fn name(self) -> &'static str {
        match self {
            Conv2dAlgo::Direct => "direct",
            Conv2dAlgo::Sliding => "sliding",
            Conv2dAlgo::Winograd2 => "winograd2",
            Conv2dAlgo::Winograd4 => "winograd4",
        }
    }

    /// The algorithm for `pass` of `d` when calibration is off ([`calibrate`]): a fixed rule
    /// from `cargo bench -p benches --bench conv_layers` on the three presets' layers, one
    /// thread, on an Intel Xeon (Emerald Rapids, two 512-bit FMA units, the AVX-512 kernels;
    /// BENCHMARKS.md, "CPU, Intel Xeon"). Calibration measures each machine instead; this rule
    /// is what a machine that has not measured runs, and what tests run everywhere.
    /// - not 3x3, stride 1, pad 1: [`Conv2dAlgo::Direct`] (or [`Conv2dAlgo::Sliding`] for the
    ///   other odd "same" kernels under 128 channels);
    /// - under 128 channels on either side, and forward and backward-data under 256 on maps of
    ///   8x8 or less: [`Conv2dAlgo::Sliding`], 1.2 to 3x the im2col path's rate (its products
    ///   are K deep and C KH KW long, thin for 8 to 64 channels, and im2col copies the input
    ///   9 times); but backward-data and backward-weight of a layer with fewer than 8 input
    ///   channels (the first, C = 3) run direct, where the sliding tile's 8 rows would be mostly
    ///   empty;
    /// - 128 channels or more: Winograd F(4x4) on maps of 32x32 (all passes) and for the
    ///   forward on 16x16, F(2x2) for the other passes on 16x16 and all on 8x8 (F(4x4)'s 2x2
    ///   tiles a map leave its transforms a quarter of the work), direct on 4x4 (one F(2x2)
    ///   tile in four is the map's edge; backward-data runs as a forward there).
    pub fn choose(d: &Conv2dDims, pass: Conv2dPass) -> Conv2dAlgo {
        let channels = d.c.min(d.k);
        let side = d.h.min(d.w);
        let thin = channels < WINOGRAD_MIN_CHANNELS
            || (channels < 2 * WINOGRAD_MIN_CHANNELS
                && side <= 8
                && pass != Conv2dPass::BackwardWeight);
        if sliding::applies(d) && thin {
            return match pass {
                Conv2dPass::Forward => Conv2dAlgo::Sliding,
                _ if d.c >= 8 => Conv2dAlgo::Sliding,
                _ => Conv2dAlgo::Direct,
            };
        }
        if !winograd::applies(d) || channels < WINOGRAD_MIN_CHANNELS {
            return Conv2dAlgo::Direct;
        }
        match pass {
            _ if side >= 32 => Conv2dAlgo::Winograd4,
            Conv2dPass::Forward if side >= 16 => Conv2dAlgo::Winograd4,
            _ if side >= 8 => Conv2dAlgo::Winograd2,
            _ => Conv2dAlgo::Direct,
        }
    }

    /// Whether this algorithm computes `d`.
    pub fn computes(self, d: &Conv2dDims) -> bool {
        match self {
            Conv2dAlgo::Direct => true,
            Conv2dAlgo::Sliding => sliding::applies(d),
            Conv2dAlgo::Winograd2 | Conv2dAlgo::Winograd4 => winograd::applies(d),
        }
    }

    /// `Err` if this algorithm cannot compute `d`.
    fn check(self, op: &'static str, d: &Conv2dDims) -> Result<()> {
        let tile = match self {
            Conv2dAlgo::Direct => return Ok(()),
            Conv2dAlgo::Sliding if !self.computes(d) => {
                return Err(Error::Invalid {
                    op,
                    msg: format!(
                        "the sliding convolution needs stride 1 and an odd square kernel padded \
                         to keep the map's size, not {}x{}, stride {}, pad {}",
                        d.kh, d.kw, d.stride, d.pad
                    ),
                })
            }
            Conv2dAlgo::Sliding => return Ok(()),
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

/// Convolution forward, by the calibrated algorithm or [`Conv2dAlgo::choose`] ([`calibrate`]).
/// x: (N, C, H, W), weight: (K, C, KH, KW) -> y: (N, K, OH, OW), overwritten.
///
/// # Errors
/// [`Error::Shape`] naming the shapes if x and weight do not fit (see [`Conv2dDims::new`]) or y is
/// not (N, K, OH, OW); [`Error::Invalid`] for a stride of 0.
pub fn conv2d_forward(y: &mut Tensor, x: &Tensor, weight: &Tensor, geom: Conv2dGeom) -> Result<()> {
    conv2d_forward_using(None, y, x, weight, geom)
}

/// As [`conv2d_forward`], with the algorithm `algo` (`None`: calibrated or
/// [`Conv2dAlgo::choose`]).
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
    conv2d_forward_in(Precision::Fp32, algo, y, x, weight, geom)
}

/// As [`conv2d_forward_using`], with the products' operands in `precision`: on a CUDA device,
/// TF32 or BF16 run the tensor-core kernels ([`tc`]), FP32 the FP32 ones.
///
/// # Errors
/// As [`conv2d_forward_using`]; [`Error::Invalid`] for TF32 or BF16 on the CPU.
pub fn conv2d_forward_in(
    precision: Precision,
    algo: Option<Conv2dAlgo>,
    y: &mut Tensor,
    x: &Tensor,
    weight: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "conv2d_forward";
    let d = Conv2dDims::new(OP, x.dims(), weight.dims(), geom)?;
    y.expect_shape(OP, "y", &d.y_dims())?;
    if let Some(algo) = algo {
        algo.check(OP, &d)?;
    }
    // On a CUDA device the implicit-GEMM kernels run whatever `algo` says.
    dispatch!(OP, [("y", y), ("x", x), ("weight", weight)],
        cpu => {
            let (y, x, w) = (y.as_mut_slice()?, x.as_slice()?, weight.as_slice()?);
            run_cpu_in(OP, precision, algo, Conv2dPass::Forward, y, (x, w), &d)
        },
        cuda |b| => {
            let (yb, xb, wb) = (b.buf_mut(OP, y)?, b.buf(OP, x)?, b.buf(OP, weight)?);
            let (xd, wd) = (x.dims(), weight.dims());
            match precision {
                Precision::Fp32 => cuda::conv2d_forward(b, yb, xb, wb, xd, wd, geom),
                Precision::Tf32 => tc::conv2d_forward_tc(b, None, yb, xb, wb, xd, wd, geom),
                Precision::Bf16 => {
                    let (xh, wh) = (bf16_copy(b, xb)?, bf16_copy(b, wb)?);
                    tc::conv2d_forward_tc(b, None, yb, &xh, &wh, xd, wd, geom)
                }
            }
        },
    )
}

/// Whether this CPU runs convolutions with BF16 operands (`--precision bf16`): AVX-512 BF16 and
/// the avx512 kernels chosen ([`crate::simd::isa`]).
pub fn bf16_available() -> bool {
    sliding::bf16::available()
}

/// `pass` of `d` on the CPU in `precision`: FP32 by [`run_cpu`]; BF16 by the `vdpbf16ps` sliding
/// kernels (`sliding/bf16.rs`) where they apply, else the im2col path on operands rounded to
/// BF16. `algo` pins the FP32 algorithm only: BF16 has one of each.
fn run_cpu_in(
    op: &'static str,
    precision: Precision,
    algo: Option<Conv2dAlgo>,
    pass: Conv2dPass,
    out: &mut [f32],
    (a, b): (&[f32], &[f32]),
    d: &Conv2dDims,
) -> Result<()> {
    if precision == Precision::Bf16 && sliding::applies(d) && bf16_available() {
        // The kernels round the operands as they copy them into their layouts.
        match pass {
            Conv2dPass::Forward => sliding::bf16::forward(out, a, b, d),
            Conv2dPass::BackwardData => sliding::bf16::backward_data(out, a, b, d),
            Conv2dPass::BackwardWeight => sliding::bf16::backward_weight(out, a, b, d),
        }
        return Ok(());
    }
    match precision.cpu_operands(op, [a, b])? {
        None => run_cpu(algo, pass, out, (a, b), d),
        Some([ra, rb]) => run_cpu(Some(Conv2dAlgo::Direct), pass, out, (&ra, &rb), d),
    }
}

/// `pass` of `d` on the CPU by `algo` (`None`: [`calibrate::run_calibrated`]), into `out` (y, dx
/// or dweight) from `inputs` ((x, weight), (dy, weight) or (dy, x)).
fn run_cpu(
    algo: Option<Conv2dAlgo>,
    pass: Conv2dPass,
    out: &mut [f32],
    (a, b): (&[f32], &[f32]),
    d: &Conv2dDims,
) -> Result<()> {
    let run = |algo: Conv2dAlgo, out: &mut [f32]| {
        use Conv2dAlgo::{Direct, Sliding, Winograd2, Winograd4};
        use Conv2dPass::{BackwardData, BackwardWeight, Forward};
        let isa = crate::simd::isa();
        let (f2, f4) = (&winograd::F2, &winograd::F4);
        match (pass, algo) {
            (Forward, Direct) => cpu::forward(out, a, b, d),
            (Forward, Sliding) => sliding::forward(isa, out, a, b, d),
            (Forward, Winograd2) => winograd::forward(f2, out, a, b, d),
            (Forward, Winograd4) => winograd::forward(f4, out, a, b, d),
            (BackwardData, Direct) => cpu::backward_data(out, a, b, d),
            (BackwardData, Sliding) => sliding::backward_data(isa, out, a, b, d),
            (BackwardData, Winograd2) => winograd::backward_data(f2, out, a, b, d),
            (BackwardData, Winograd4) => winograd::backward_data(f4, out, a, b, d),
            (BackwardWeight, Direct) => cpu::backward_weight(out, a, b, d),
            (BackwardWeight, Sliding) => sliding::backward_weight(isa, out, a, b, d),
            (BackwardWeight, Winograd2) => winograd::backward_weight(f2, out, a, b, d),
            (BackwardWeight, Winograd4) => winograd::backward_weight(f4, out, a, b, d),
        }
    };
    match algo {
        Some(algo) => run(algo, out),
        None => calibrate::run_calibrated(d, pass, out, run),
    }
}

/// Convolution backward with respect to the input, by the calibrated algorithm or
/// [`Conv2dAlgo::choose`] ([`calibrate`]).
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

/// As [`conv2d_backward_data`], with the algorithm `algo` (`None`: calibrated or
/// [`Conv2dAlgo::choose`]).
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
    conv2d_backward_data_in(Precision::Fp32, algo, dx, dy, weight, geom)
}

/// As [`conv2d_backward_data_using`], with the products' operands in `precision`, as
/// [`conv2d_forward_in`].
///
/// # Errors
/// As [`conv2d_backward_data_using`]; [`Error::Invalid`] for TF32 or BF16 on the CPU.
pub fn conv2d_backward_data_in(
    precision: Precision,
    algo: Option<Conv2dAlgo>,
    dx: &mut Tensor,
    dy: &Tensor,
    weight: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "conv2d_backward_data";
    let d = Conv2dDims::new(OP, dx.dims(), weight.dims(), geom)?;
    dy.expect_shape(OP, "dy", &d.y_dims())?;
    if let Some(algo) = algo {
        algo.check(OP, &d)?;
    }
    dispatch!(OP, [("dx", dx), ("dy", dy), ("weight", weight)],
        cpu => {
            let (dx, dy, w) = (dx.as_mut_slice()?, dy.as_slice()?, weight.as_slice()?);
            run_cpu_in(OP, precision, algo, Conv2dPass::BackwardData, dx, (dy, w), &d)
        },
        cuda |b| => {
            let (dxb, dyb, wb) = (b.buf_mut(OP, dx)?, b.buf(OP, dy)?, b.buf(OP, weight)?);
            let (xd, wd) = (&d.x_dims(), weight.dims());
            match precision {
                Precision::Fp32 => cuda::conv2d_backward_data(b, dxb, dyb, wb, xd, wd, geom),
                Precision::Tf32 => {
                    tc::conv2d_backward_data_tc(b, None, dxb, dyb, wb, xd, wd, geom)
                }
                Precision::Bf16 => {
                    let (dyh, wh) = (bf16_copy(b, dyb)?, bf16_copy(b, wb)?);
                    tc::conv2d_backward_data_tc(b, None, dxb, &dyh, &wh, xd, wd, geom)
                }
            }
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

/// As [`conv2d_backward_weight`], with the algorithm `algo` (`None`: calibrated or
/// [`Conv2dAlgo::choose`]).
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
    conv2d_backward_weight_in(Precision::Fp32, algo, dweight, dy, x, geom)
}

/// As [`conv2d_backward_weight_using`], with the products' operands in `precision`, as
/// [`conv2d_forward_in`].
///
/// # Errors
/// As [`conv2d_backward_weight_using`]; [`Error::Invalid`] for TF32 or BF16 on the CPU.
pub fn conv2d_backward_weight_in(
    precision: Precision,
    algo: Option<Conv2dAlgo>,
    dweight: &mut Tensor,
    dy: &Tensor,
    x: &Tensor,
    geom: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "conv2d_backward_weight";
    let d = Conv2dDims::new(OP, x.dims(), dweight.dims(), geom)?;
    dy.expect_shape(OP, "dy", &d.y_dims())?;
    if let Some(algo) = algo {
        algo.check(OP, &d)?;
    }
    dispatch!(OP, [("dweight", dweight), ("dy", dy), ("x", x)],
        cpu => {
            let (dw, dy, x) = (dweight.as_mut_slice()?, dy.as_slice()?, x.as_slice()?);
            run_cpu_in(OP, precision, algo, Conv2dPass::BackwardWeight, dw, (dy, x), &d)
        },
        cuda |b| => {
            let (dwb, dyb, xb) = (b.buf_mut(OP, dweight)?, b.buf(OP, dy)?, b.buf(OP, x)?);
            let (xd, wd) = (x.dims(), &d.weight_dims());
            match precision {
                Precision::Fp32 => cuda::conv2d_backward_weight(b, dwb, dyb, xb, xd, wd, geom),
                Precision::Tf32 => {
                    tc::conv2d_backward_weight_tc(b, None, dwb, dyb, xb, xd, wd, geom)
                }
                Precision::Bf16 => {
                    let (dyh, xh) = (bf16_copy(b, dyb)?, bf16_copy(b, xb)?);
                    tc::conv2d_backward_weight_tc(b, None, dwb, &dyh, &xh, xd, wd, geom)
                }
            }
        },
    )
}

//! Batch normalisation (Ioffe & Szegedy, 2015) of (N, C, H, W) maps or (N, F) feature rows.
//!
//! Per channel c (per feature, for a (N, F) input), over the M = N*H*W values x_i of that channel:
//!
//! ```text
//! mean    = sum_i x_i / M
//! var     = sum_i (x_i - mean)^2 / M                 (biased)
//! inv_std = 1 / sqrt(var + eps)
//! x_hat_i = (x_i - mean) * inv_std
//! y_i     = gamma * x_hat_i + beta
//! ```
//!
//! Training normalises with the batch statistics and updates the running averages,
//! `r = momentum * r + (1 - momentum) * b`; for the running variance b is the *unbiased* variance
//! `var * M / (M - 1)` or the biased `var`, as [`BatchNormConfig::running_variance`] says
//! ([`RunningVariance`]); `momentum` is meant as TensorFlow means it, the weight of the old value
//! (0.997 in the seed). Evaluation normalises with the running statistics instead.
//!
//! Backward, with dy the upstream gradient (sums over the M values of channel c):
//!
//! ```text
//! dbeta  += sum_i dy_i
//! dgamma += sum_i dy_i * x_hat_i
//! batch statistics (train):   dx_i = gamma * inv_std * (dy_i - sum(dy) / M - x_hat_i * sum(dy * x_hat) / M)
//! running statistics (eval):  dx_i = gamma * inv_std * dy_i      (mean and inv_std are constants)
//! ```
//!
//! The per-channel sums are taken in a fixed order and in f64 (the mean and variance in one pass
//! of sums shifted by the channel's first value), parallel over channels only, so the results do
//! not depend on the thread count.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
#[cfg(target_arch = "x86_64")]
mod lanes_x86;

use tensor_core::{Device, Tensor};

use crate::cuda::{dispatch, TensorBackend};
use cuda::{BatchNormChannels, BatchNormEvalChannels, BatchNormSaved, BatchNormStatsBufs};

use crate::relu::{relu_backward_in_place, relu_forward_in_place, ReluMask};
use crate::{Error, Result};
use cpu::{Dims, Then};

/// eps added to the variance, as in the seed (and PyTorch's default).
pub const BATCHNORM_EPS: f32 = 1e-5;
/// Weight of the old value in the running averages, as in the seed (TensorFlow's `decay`).
pub const BATCHNORM_MOMENTUM: f32 = 0.997;

/// Which batch variance a training forward folds into the running variance.
///
/// The seed's TensorFlow 1 layers differ by the input's rank (SPEC "Layer details"): the fused
/// kernel that 4-D inputs take (the convolutional layers) averages the unbiased variance, the
/// unfused path of 2-D inputs (the fully-connected layers) the biased one it normalised with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunningVariance {
    /// `var * M / (M - 1)`: TensorFlow's fused kernel, PyTorch's every layer.
    #[default]
    Unbiased,
    /// `var`, as the batch was normalised with: TensorFlow's unfused (2-D) path.
    Biased,
}

impl RunningVariance {
    /// The factor the biased batch variance of M values is multiplied by before it enters the
    /// running average: M / (M - 1) or 1. M >= 2.
    pub fn factor(self, m: usize) -> f64 {
        match self {
            RunningVariance::Unbiased => m as f64 / (m - 1) as f64,
            RunningVariance::Biased => 1.0,
        }
    }
}

/// The constants of a batch-norm layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root; > 0.
    pub eps: f32,
    /// Weight of the old value in `r = momentum * r + (1 - momentum) * b`; in [0, 1].
    pub momentum: f32,
    /// Which batch variance b the running variance averages.
    pub running_variance: RunningVariance,
}

impl Default for BatchNormConfig {
    /// The seed's values: eps 1e-5, momentum 0.997, the unbiased variance (its conv layers').
    fn default() -> Self {
        BatchNormConfig {
            eps: BATCHNORM_EPS,
            momentum: BATCHNORM_MOMENTUM,
            running_variance: RunningVariance::Unbiased,
        }
    }
}

impl BatchNormConfig {
    /// # Errors
    /// [`Error::Invalid`] naming `op` unless eps > 0 and momentum in [0, 1], both finite.
    pub fn check(&self, op: &'static str) -> Result<()> {
        check_eps(op, self.eps)?;
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::Invalid {
                op,
                msg: format!("momentum {} is outside [0, 1]", self.momentum),
            });
        }
        Ok(())
    }
}

fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps > 0.0 && eps.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid {
            op,
            msg: format!("eps {eps} must be finite and > 0"),
        })
    }
}

/// Which statistics normalised the input; decides how backward routes dx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsSource {
    /// The batch's own statistics (training): they depend on x, and dx accounts for that.
    Batch,
    /// The running statistics (evaluation): constants as far as x is concerned.
    Running,
}

/// The per-channel statistics a forward pass normalised with, kept for its backward.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormStats {
    /// mean: (C,)
    pub mean: Tensor,
    /// inv_std = 1 / sqrt(var + eps): (C,)
    pub inv_std: Tensor,
    pub source: StatsSource,
}

/// Views x as (N, C, inner): (N, C, H, W) has inner = H*W, (N, F) has C = F and inner = 1.
fn dims(op: &'static str, x: &Tensor) -> Result<Dims> {
    let d = match *x.dims() {
        [n, c, h, w] => Dims { n, c, inner: h * w },
        [n, f] => Dims { n, c: f, inner: 1 },
        _ => {
            return Err(Error::Shape {
                op,
                msg: format!("x has shape {}, expected (N, C, H, W) or (N, F)", x.shape()),
            })
        }
    };
    if x.is_empty() {
        return Err(Error::Shape {
            op,
            msg: format!("x has shape {}, which holds no values", x.shape()),
        });
    }
    Ok(d)
}

/// Checks that every tensor in `per_channel` has shape (C,).
fn expect_channels(
    op: &'static str,
    c: usize,
    per_channel: &[(&'static str, &Tensor)],
) -> Result<()> {
    for (what, t) in per_channel {
        t.expect_shape(op, what, &[c])?;
    }
    Ok(())
}

/// Training-mode forward: normalises with the batch statistics and updates the running ones.
///
/// # Shapes
/// x: (N, C, H, W) or (N, F) -> y: same shape, overwritten.
/// gamma, beta, running_mean, running_var: (C,) (or (F,)); the running ones are updated in place.
/// Returns the batch mean and inv_std, (C,) each, for [`batchnorm_backward`].
///
/// # Errors
/// Mismatched shapes, fewer than 2 values per channel (no variance to speak of), a bad `cfg`.
pub fn batchnorm_forward_train(
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    cfg: &BatchNormConfig,
) -> Result<BatchNormStats> {
    let channels = TrainChannels {
        gamma,
        beta,
        running_mean,
        running_var,
    };
    let (stats, _) = forward_train("batchnorm_forward_train", y, x, channels, cfg, false)?;
    Ok(stats)
}

/// [`batchnorm_forward_train`] followed by [`relu_forward_in_place`] on y, with the same
/// results to the bit; on the CPU in one pass over y instead of two (the ReLU reads and writes
/// the whole map again), on a GPU the two kernels.
///
/// # Shapes
/// As [`batchnorm_forward_train`]; also returns the ReLU's mask, for
/// [`relu_backward_in_place`](crate::relu::relu_backward_in_place).
///
/// # Errors
/// As [`batchnorm_forward_train`].
pub fn batchnorm_relu_forward_train(
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    cfg: &BatchNormConfig,
) -> Result<(BatchNormStats, ReluMask)> {
    let channels = TrainChannels {
        gamma,
        beta,
        running_mean,
        running_var,
    };
    let (stats, mask) = forward_train("batchnorm_relu_forward_train", y, x, channels, cfg, true)?;
    Ok((stats, mask.expect("a mask was asked for")))
}

/// The per-channel tensors of a training forward.
struct TrainChannels<'a> {
    gamma: &'a Tensor,
    beta: &'a Tensor,
    running_mean: &'a mut Tensor,
    running_var: &'a mut Tensor,
}

/// With `relu`, the mask a forward's CPU pass made, or else (on a GPU) the ReLU in its own
/// kernel on y; without, none.
fn relu_unless_done(
    y: &mut Tensor,
    relu: bool,
    mask: Option<ReluMask>,
) -> Result<Option<ReluMask>> {
    match mask {
        None if relu => Ok(Some(relu_forward_in_place(y)?)),
        mask => Ok(mask),
    }
}

/// Both training forwards: with `relu`, y = relu(...) and its mask.
fn forward_train(
    op: &'static str,
    y: &mut Tensor,
    x: &Tensor,
    ch: TrainChannels<'_>,
    cfg: &BatchNormConfig,
    relu: bool,
) -> Result<(BatchNormStats, Option<ReluMask>)> {
    let TrainChannels {
        gamma,
        beta,
        running_mean,
        running_var,
    } = ch;
    cfg.check(op)?;
    let d = dims(op, x)?;
    y.expect_shape(op, "y", x.dims())?;
    expect_channels(
        op,
        d.c,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", &*running_mean),
            ("running_var", &*running_var),
        ],
    )?;
    let m = d.n * d.inner;
    if m < 2 {
        return Err(Error::Shape {
            op,
            msg: format!(
                "x has shape {}: {m} value per channel, batch statistics need at least 2",
                x.shape()
            ),
        });
    }
    let (mean, inv_std, mask) = dispatch!(
        op,
        [
            ("y", y),
            ("x", x),
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        cpu => {
            let running = cpu::Running {
                mean: running_mean.as_mut_slice()?,
                var: running_var.as_mut_slice()?,
            };
            let shape = y.shape().clone();
            let (y, x) = (y.as_mut_slice()?, x.as_slice()?);
            let (gamma, beta) = (gamma.as_slice()?, beta.as_slice()?);
            let mut keep = Vec::new();
            let then = Then::relu_mask_if(relu, &mut keep, x.len());
            let (mean, inv_std) = cpu::forward_train(y, x, d, gamma, beta, running, cfg, then);
            let mask = relu.then_some(ReluMask::Bytes { shape, keep });
            Ok((Tensor::from_vec([d.c], mean)?, Tensor::from_vec([d.c], inv_std)?, mask))
        },
        cuda |b| => {
            let (mut mean, mut inv_std) = (b.zeros([d.c])?, b.zeros([d.c])?);
            let stats = BatchNormStatsBufs {
                mean: b.buf_mut(op, &mut mean)?,
                inv_std: b.buf_mut(op, &mut inv_std)?,
            };
            let channels = BatchNormChannels {
                gamma: b.buf(op, gamma)?,
                beta: b.buf(op, beta)?,
                running_mean: b.buf_mut(op, running_mean)?,
                running_var: b.buf_mut(op, running_var)?,
            };
            let (yb, xb) = (b.buf_mut(op, y)?, b.buf(op, x)?);
            cuda::batchnorm_forward_train(b, yb, stats, xb, x.dims(), channels, cfg)?;
            Ok((mean, inv_std, None))
        },
    )?;
    let mask = relu_unless_done(y, relu, mask)?;
    let stats = BatchNormStats {
        mean,
        inv_std,
        source: StatsSource::Batch,
    };
    Ok((stats, mask))
}

/// y = gamma (x - mean) inv_std + beta with the statistics a forward returned: that forward's
/// output again, bit for bit (the same arithmetic), from its input. Lets a layer recompute the
/// output in its backward instead of keeping it between the passes. CPU tensors only.
///
/// # Shapes
/// x: (N, C, H, W) or (N, F) -> y: same shape, overwritten; gamma, beta and the statistics (C,).
///
/// # Errors
/// Mismatched shapes; tensors not on the CPU.
pub fn batchnorm_apply(
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchNormStats,
) -> Result<()> {
    apply("batchnorm_apply", y, x, gamma, beta, stats, Then::Identity)
}

/// [`batchnorm_apply`] followed by a ReLU, in one pass: relu(bn(x)) as
/// [`batchnorm_relu_forward_train`] (or its evaluation twin) made it, without the mask. CPU
/// tensors only.
///
/// # Shapes and errors
/// As [`batchnorm_apply`].
pub fn batchnorm_relu_apply(
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchNormStats,
) -> Result<()> {
    apply("batchnorm_relu_apply", y, x, gamma, beta, stats, Then::Relu)
}

fn apply(
    op: &'static str,
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchNormStats,
    then: Then<'_>,
) -> Result<()> {
    let d = dims(op, x)?;
    y.expect_shape(op, "y", x.dims())?;
    expect_channels(
        op,
        d.c,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("mean", &stats.mean),
            ("inv_std", &stats.inv_std),
        ],
    )?;
    cpu::normalize(
        y.as_mut_slice()?,
        x.as_slice()?,
        d,
        stats.mean.as_slice()?,
        stats.inv_std.as_slice()?,
        gamma.as_slice()?,
        beta.as_slice()?,
        then,
    );
    Ok(())
}

/// Evaluation-mode forward: normalises with the running statistics, which stay unchanged.
///
/// # Shapes
/// x: (N, C, H, W) or (N, F) -> y: same shape, overwritten.
/// gamma, beta, running_mean, running_var: (C,) (or (F,)).
/// Returns the running mean and 1 / sqrt(running_var + eps), (C,) each, for [`batchnorm_backward`].
///
/// # Errors
/// Mismatched shapes, eps not finite and > 0, a negative running variance.
pub fn batchnorm_forward_eval(
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<BatchNormStats> {
    let channels = [gamma, beta, running_mean, running_var];
    let (stats, _) = forward_eval("batchnorm_forward_eval", y, x, channels, eps, false)?;
    Ok(stats)
}

/// [`batchnorm_forward_eval`] followed by [`relu_forward_in_place`] on y, with the same results
/// to the bit, in one pass on the CPU (see [`batchnorm_relu_forward_train`]).
///
/// # Shapes
/// As [`batchnorm_forward_eval`]; also returns the ReLU's mask.
///
/// # Errors
/// As [`batchnorm_forward_eval`].
pub fn batchnorm_relu_forward_eval(
    y: &mut Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Result<(BatchNormStats, ReluMask)> {
    let channels = [gamma, beta, running_mean, running_var];
    let (stats, mask) = forward_eval("batchnorm_relu_forward_eval", y, x, channels, eps, true)?;
    Ok((stats, mask.expect("a mask was asked for")))
}

/// Both evaluation forwards: with `relu`, y = relu(...) and its mask. `channels`: gamma, beta,
/// running_mean, running_var.
fn forward_eval(
    op: &'static str,
    y: &mut Tensor,
    x: &Tensor,
    [gamma, beta, running_mean, running_var]: [&Tensor; 4],
    eps: f32,
    relu: bool,
) -> Result<(BatchNormStats, Option<ReluMask>)> {
    check_eps(op, eps)?;
    let d = dims(op, x)?;
    y.expect_shape(op, "y", x.dims())?;
    expect_channels(
        op,
        d.c,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let (mean, inv_std, mask) = dispatch!(
        op,
        [
            ("y", y),
            ("x", x),
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        cpu => {
            let rv = running_var.as_slice()?;
            if let Some(c) = rv.iter().position(|&v| v.is_nan() || v < 0.0) {
                return Err(Error::Invalid {
                    op,
                    msg: format!("running_var[{c}] is {}, expected >= 0", rv[c]),
                });
            }
            let inv_std = cpu::running_inv_std(rv, eps);
            let (rm, gamma, beta) = (running_mean.as_slice()?, gamma.as_slice()?, beta.as_slice()?);
            let shape = y.shape().clone();
            let (y, x) = (y.as_mut_slice()?, x.as_slice()?);
            let mut keep = Vec::new();
            let then = Then::relu_mask_if(relu, &mut keep, x.len());
            cpu::normalize(y, x, d, rm, &inv_std, gamma, beta, then);
            let mask = relu.then_some(ReluMask::Bytes { shape, keep });
            Ok((running_mean.clone(), Tensor::from_vec([d.c], inv_std)?, mask))
        },
        cuda |b| => {
            let (mut mean, mut inv_std) = (b.zeros([d.c])?, b.zeros([d.c])?);
            let stats = BatchNormStatsBufs {
                mean: b.buf_mut(op, &mut mean)?,
                inv_std: b.buf_mut(op, &mut inv_std)?,
            };
            let channels = BatchNormEvalChannels {
                gamma: b.buf(op, gamma)?,
                beta: b.buf(op, beta)?,
                running_mean: b.buf(op, running_mean)?,
                running_var: b.buf(op, running_var)?,
            };
            let (yb, xb) = (b.buf_mut(op, y)?, b.buf(op, x)?);
            cuda::batchnorm_forward_eval(b, yb, stats, xb, x.dims(), channels, eps)?;
            Ok((mean, inv_std, None))
        },
    )?;
    let mask = relu_unless_done(y, relu, mask)?;
    let stats = BatchNormStats {
        mean,
        inv_std,
        source: StatsSource::Running,
    };
    Ok((stats, mask))
}

/// Backward of either forward; `stats` is what that forward returned.
///
/// # Shapes
/// dy, x: (N, C, H, W) or (N, F) -> dx: same shape, overwritten.
/// gamma: (C,); dgamma, dbeta: (C,), accumulated (`+=`).
///
/// # Errors
/// Mismatched shapes.
pub fn batchnorm_backward(
    dx: &mut Tensor,
    dgamma: &mut Tensor,
    dbeta: &mut Tensor,
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    stats: &BatchNormStats,
) -> Result<()> {
    let grads = Grads { dx, dgamma, dbeta };
    backward("batchnorm_backward", grads, dy, None, x, gamma, stats)
}

/// Backward of relu(bn(x)) ([`batchnorm_relu_forward_train`] or its evaluation twin): dy is the
/// gradient of the ReLU's output and `relu_mask` the mask that forward returned. The same
/// results, to the bit, as [`relu_backward_in_place`](crate::relu::relu_backward_in_place) on
/// dy followed by [`batchnorm_backward`]; on the CPU the ReLU's backward is folded into the
/// batch norm's two reads of dy (a pass over dy fewer, and no gated copy written), on a GPU
/// the two run one after the other on a copy of dy.
///
/// # Shapes
/// As [`batchnorm_backward`]; `relu_mask` of x's shape.
///
/// # Errors
/// Mismatched shapes; a byte mask with tensors that are not on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_relu_backward(
    dx: &mut Tensor,
    dgamma: &mut Tensor,
    dbeta: &mut Tensor,
    dy: &Tensor,
    relu_mask: &ReluMask,
    x: &Tensor,
    gamma: &Tensor,
    stats: &BatchNormStats,
) -> Result<()> {
    const OP: &str = "batchnorm_relu_backward";
    // x against the shape the ReLU's forward saw.
    x.expect_shape(OP, "x", relu_mask.shape().dims())?;
    let grads = Grads { dx, dgamma, dbeta };
    match relu_mask {
        ReluMask::Bytes { keep, .. } if dy.device() == Device::Cpu => {
            // The vector sums read the mask beside x: its length is checked, not its shape's.
            if keep.len() != x.len() {
                return Err(Error::Invalid {
                    op: OP,
                    msg: format!(
                        "relu_mask holds {} bytes for a shape of {} values",
                        keep.len(),
                        x.len()
                    ),
                });
            }
            backward(OP, grads, dy, Some(keep), x, gamma, stats)
        }
        _ => {
            let mut gated = dy.clone();
            relu_backward_in_place(&mut gated, relu_mask)?;
            backward(OP, grads, &gated, None, x, gamma, stats)
        }
    }
}

/// The gradients a backward writes: dx overwritten, dgamma and dbeta accumulated.
struct Grads<'a> {
    dx: &'a mut Tensor,
    dgamma: &'a mut Tensor,
    dbeta: &'a mut Tensor,
}

/// Both backwards; `relu_mask`, a CPU byte mask, gates dy as the ReLU's backward would.
fn backward(
    op: &'static str,
    grads: Grads<'_>,
    dy: &Tensor,
    relu_mask: Option<&[u8]>,
    x: &Tensor,
    gamma: &Tensor,
    stats: &BatchNormStats,
) -> Result<()> {
    let Grads { dx, dgamma, dbeta } = grads;
    let d = dims(op, x)?;
    dy.expect_shape(op, "dy", x.dims())?;
    dx.expect_shape(op, "dx", x.dims())?;
    expect_channels(
        op,
        d.c,
        &[
            ("gamma", gamma),
            ("dgamma", &*dgamma),
            ("dbeta", &*dbeta),
            ("mean", &stats.mean),
            ("inv_std", &stats.inv_std),
        ],
    )?;
    dispatch!(
        op,
        [
            ("dx", dx),
            ("dgamma", dgamma),
            ("dbeta", dbeta),
            ("dy", dy),
            ("x", x),
            ("gamma", gamma),
            ("mean", &stats.mean),
            ("inv_std", &stats.inv_std),
        ],
        cpu => {
            let normalized = cpu::Normalized {
                gamma: gamma.as_slice()?,
                mean: stats.mean.as_slice()?,
                inv_std: stats.inv_std.as_slice()?,
                source: stats.source,
            };
            let (dgamma, dbeta) = (dgamma.as_mut_slice()?, dbeta.as_mut_slice()?);
            let up = cpu::Upstream {
                dy: dy.as_slice()?,
                relu_mask,
            };
            cpu::backward(dx.as_mut_slice()?, dgamma, dbeta, up, x.as_slice()?, d, normalized);
            Ok(())
        },
        cuda |b| => {
            debug_assert!(relu_mask.is_none(), "a byte mask is gated on the CPU only");
            let saved = BatchNormSaved {
                mean: b.buf(op, &stats.mean)?,
                inv_std: b.buf(op, &stats.inv_std)?,
                source: stats.source,
            };
            let (dgamma, dbeta) = (b.buf_mut(op, dgamma)?, b.buf_mut(op, dbeta)?);
            let dxb = b.buf_mut(op, dx)?;
            let (dyb, xb, gamma) = (b.buf(op, dy)?, b.buf(op, x)?, b.buf(op, gamma)?);
            cuda::batchnorm_backward(b, dxb, dgamma, dbeta, dyb, xb, x.dims(), gamma, saved)
        },
    )
}

#[cfg(test)]
mod tests;

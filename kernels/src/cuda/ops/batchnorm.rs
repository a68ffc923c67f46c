//! Batch norm on the device, as [`crate::batchnorm`]: one block per channel (batchnorm.cu).

use super::{check_len, count};
use crate::batchnorm::{BatchNormConfig, StatsSource};
use crate::cuda::launch::{Backend, Kernel, LaunchConfig};
use crate::cuda::params::{BatchNormBackwardParams, BatchNormForwardParams};
use crate::{Error, Result};

pub const BATCHNORM_FORWARD_TRAIN: Kernel<BatchNormForwardParams> =
    Kernel::new("batchnorm", "batchnorm_forward_train");
pub const BATCHNORM_FORWARD_EVAL: Kernel<BatchNormForwardParams> =
    Kernel::new("batchnorm", "batchnorm_forward_eval");
pub const BATCHNORM_BACKWARD: Kernel<BatchNormBackwardParams> =
    Kernel::new("batchnorm", "batchnorm_backward");

/// Threads per block of the batch-norm kernels; `BATCHNORM_THREADS` in batchnorm.cu.
pub const BATCHNORM_THREADS: u32 = 256;

/// The per-channel buffers of a batch-norm layer in training, (C,) each: the forward updates the
/// running statistics.
pub struct BatchNormChannels<'a, B: Backend> {
    pub gamma: &'a B::Buf<f32>,
    pub beta: &'a B::Buf<f32>,
    pub running_mean: &'a mut B::Buf<f32>,
    pub running_var: &'a mut B::Buf<f32>,
}

/// The per-channel buffers of a batch-norm layer in evaluation, (C,) each: the forward only
/// reads the running statistics.
pub struct BatchNormEvalChannels<'a, B: Backend> {
    pub gamma: &'a B::Buf<f32>,
    pub beta: &'a B::Buf<f32>,
    pub running_mean: &'a B::Buf<f32>,
    pub running_var: &'a B::Buf<f32>,
}

/// The statistics a forward normalised with, (C,) each: written by the forwards, read by
/// [`batchnorm_backward`].
pub struct BatchNormStatsBufs<'a, B: Backend> {
    pub mean: &'a mut B::Buf<f32>,
    pub inv_std: &'a mut B::Buf<f32>,
}

/// x's `dims`, (N, C, H, W) or (N, F), viewed as (n, c, inner) and checked to fit 32 bits.
fn view(op: &'static str, dims: &[usize]) -> Result<[u32; 3]> {
    let [n, c, inner] = match *dims {
        [n, c, h, w] => [n, c, h * w],
        [n, f] => [n, f, 1],
        _ => {
            return Err(Error::Shape {
                op,
                msg: format!("x has dims {dims:?}, expected (N, C, H, W) or (N, F)"),
            })
        }
    };
    if n * c * inner == 0 {
        return Err(Error::Shape {
            op,
            msg: format!("x has dims {dims:?}, which hold no values"),
        });
    }
    count(op, n * c * inner)?;
    Ok([n as u32, c as u32, inner as u32])
}

/// The forward's parameter struct, its buffers checked against `dims`. `running` holds the
/// running mean and variance with the addresses the kernel gets them at (written by the train
/// kernel, only read by the eval kernel).
#[allow(clippy::too_many_arguments)]
fn forward_params<B: Backend>(
    op: &'static str,
    dev: &B,
    y: &mut B::Buf<f32>,
    stats: BatchNormStatsBufs<'_, B>,
    x: &B::Buf<f32>,
    dims: &[usize],
    (gamma, beta): (&B::Buf<f32>, &B::Buf<f32>),
    running: [(&B::Buf<f32>, u64); 2],
) -> Result<BatchNormForwardParams> {
    let [n, c, inner] = view(op, dims)?;
    let len = (n * c * inner) as usize;
    check_len(dev, op, "x", x, len)?;
    check_len(dev, op, "y", y, len)?;
    for (what, buf) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running[0].0),
        ("running_var", running[1].0),
        ("mean", &*stats.mean),
        ("inv_std", &*stats.inv_std),
    ] {
        check_len(dev, op, what, buf, c as usize)?;
    }
    Ok(BatchNormForwardParams {
        y: dev.addr_mut(y),
        mean: dev.addr_mut(stats.mean),
        inv_std: dev.addr_mut(stats.inv_std),
        running_mean: running[0].1,
        running_var: running[1].1,
        x: dev.addr(x),
        gamma: dev.addr(gamma),
        beta: dev.addr(beta),
        eps: 0.0,
        momentum: 0.0,
        n,
        c,
        inner,
    })
}

/// Training-mode forward, as [`crate::batchnorm::batchnorm_forward_train`]: normalises with the
/// batch statistics and updates the running ones in place.
/// x: (N, C, H, W) or (N, F) given by `dims` -> y: same, overwritten; stats: (C,) each, overwritten.
///
/// # Errors
/// Buffers that do not fit `dims`, fewer than 2 values per channel, a bad `cfg`.
pub fn batchnorm_forward_train<B: Backend>(
    dev: &B,
    y: &mut B::Buf<f32>,
    stats: BatchNormStatsBufs<'_, B>,
    x: &B::Buf<f32>,
    dims: &[usize],
    ch: BatchNormChannels<'_, B>,
    cfg: &BatchNormConfig,
) -> Result<()> {
    const OP: &str = "cuda batchnorm_forward_train";
    cfg.check(OP)?;
    let running = [dev.addr_mut(ch.running_mean), dev.addr_mut(ch.running_var)];
    let mut p = forward_params(
        OP,
        dev,
        y,
        stats,
        x,
        dims,
        (ch.gamma, ch.beta),
        [(ch.running_mean, running[0]), (ch.running_var, running[1])],
    )?;
    if p.n * p.inner < 2 {
        return Err(Error::Shape {
            op: OP,
            msg: format!(
                "x has dims {dims:?}: {} value per channel, batch statistics need at least 2",
                p.n * p.inner
            ),
        });
    }
    (p.eps, p.momentum) = (cfg.eps, cfg.momentum);
    let launch = LaunchConfig::linear(p.c, BATCHNORM_THREADS, 0);
    // SAFETY: x and y hold n*c*inner values, the per-channel buffers c; block ch touches channel ch.
    unsafe { dev.launch(BATCHNORM_FORWARD_TRAIN, launch, &p) }
}

/// Evaluation-mode forward, as [`crate::batchnorm::batchnorm_forward_eval`]: normalises with the
/// running statistics, read only (a negative running variance gives NaN here, where
/// the CPU returns an error: checking would cost a host read).
/// x: (N, C, H, W) or (N, F) given by `dims` -> y: same, overwritten; stats: (C,) each, overwritten
/// with the running mean and 1 / sqrt(running_var + eps).
///
/// # Errors
/// Buffers that do not fit `dims`, eps not finite and > 0.
pub fn batchnorm_forward_eval<B: Backend>(
    dev: &B,
    y: &mut B::Buf<f32>,
    stats: BatchNormStatsBufs<'_, B>,
    x: &B::Buf<f32>,
    dims: &[usize],
    ch: BatchNormEvalChannels<'_, B>,
    eps: f32,
) -> Result<()> {
    const OP: &str = "cuda batchnorm_forward_eval";
    BatchNormConfig {
        eps,
        ..BatchNormConfig::default()
    }
    .check(OP)?;
    let running = [
        (ch.running_mean, dev.addr(ch.running_mean)),
        (ch.running_var, dev.addr(ch.running_var)),
    ];
    let mut p = forward_params(OP, dev, y, stats, x, dims, (ch.gamma, ch.beta), running)?;
    p.eps = eps;
    let launch = LaunchConfig::linear(p.c, BATCHNORM_THREADS, 0);
    // SAFETY: x and y hold n*c*inner values, the per-channel buffers c; block ch touches channel ch.
    unsafe { dev.launch(BATCHNORM_FORWARD_EVAL, launch, &p) }
}

/// The statistics a forward wrote, read by backward: mean and inv_std (C,) each, and which
/// statistics they are.
pub struct BatchNormSaved<'a, B: Backend> {
    pub mean: &'a B::Buf<f32>,
    pub inv_std: &'a B::Buf<f32>,
    pub source: StatsSource,
}

/// Backward of either forward, as [`crate::batchnorm::batchnorm_backward`].
/// dy, x: (N, C, H, W) or (N, F) given by `dims` -> dx: same, overwritten;
/// gamma: (C,); dgamma, dbeta: (C,), accumulated (`+=`).
///
/// # Errors
/// Buffers that do not fit `dims`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward<B: Backend>(
    dev: &B,
    dx: &mut B::Buf<f32>,
    dgamma: &mut B::Buf<f32>,
    dbeta: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    x: &B::Buf<f32>,
    dims: &[usize],
    gamma: &B::Buf<f32>,
    saved: BatchNormSaved<'_, B>,
) -> Result<()> {
    const OP: &str = "cuda batchnorm_backward";
    let [n, c, inner] = view(OP, dims)?;
    let len = (n * c * inner) as usize;
    for (what, buf) in [("dy", dy), ("x", x), ("dx", &*dx)] {
        check_len(dev, OP, what, buf, len)?;
    }
    for (what, buf) in [
        ("gamma", gamma),
        ("dgamma", &*dgamma),
        ("dbeta", &*dbeta),
        ("mean", saved.mean),
        ("inv_std", saved.inv_std),
    ] {
        check_len(dev, OP, what, buf, c as usize)?;
    }
    let p = BatchNormBackwardParams {
        dx: dev.addr_mut(dx),
        dgamma: dev.addr_mut(dgamma),
        dbeta: dev.addr_mut(dbeta),
        dy: dev.addr(dy),
        x: dev.addr(x),
        gamma: dev.addr(gamma),
        mean: dev.addr(saved.mean),
        inv_std: dev.addr(saved.inv_std),
        batch_stats: u32::from(saved.source == StatsSource::Batch),
        n,
        c,
        inner,
    };
    let launch = LaunchConfig::linear(c, BATCHNORM_THREADS, 0);
    // SAFETY: dx, dy and x hold n*c*inner values, the per-channel buffers c; block ch touches
    // channel ch only.
    unsafe { dev.launch(BATCHNORM_BACKWARD, launch, &p) }
}

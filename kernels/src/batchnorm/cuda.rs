//! Batch norm on the device, as [`crate::batchnorm`] (batchnorm.cu): each pass with per-channel
//! sums is a `*_partial` launch over c * chunks blocks (f64 sums per chunk), a `*_finish` launch
//! of one thread per channel (the chunks added in order), and an elementwise launch.

use super::{BatchNormConfig, RunningVariance, StatsSource};
use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::{define, module, Module};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::{Error, Result};

/// batchnorm.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    batchnorm,
    headers: [],
    params: [
        BatchNormGeom,
        BatchNormMomentsParams,
        BatchNormStatsParams,
        BatchNormNormalizeParams,
        BatchNormGradSumsParams,
        BatchNormGradFinishParams,
        BatchNormInputGradParams,
    ],
);

params! {
    /// batchnorm.cu `BatchNormGeom`: x: (n, c, inner); each channel's M = n * inner values j
    /// split into `chunks` runs of `chunk_len` (a multiple of 4; the last may be shorter); `vec4`
    /// is 1 when inner % 4 == 0 and the value arrays are 16-byte aligned.
    pub struct BatchNormGeom {
        pub n: u32,
        pub c: u32,
        pub inner: u32,
        pub chunks: u32,
        pub chunk_len: u32,
        pub vec4: u32,
    }

    /// batchnorm.cu `BatchNormMomentsParams`: x: (n, c, inner) -> partial: (c, chunks, 2), f64.
    pub struct BatchNormMomentsParams {
        pub partial: u64,
        pub x: u64,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormStatsParams`: partial: (c, chunks, 2), x: (n, c, inner) -> mean,
    /// inv_std: (c); running_mean, running_var: (c), updated in training; `unbiased` 1 when the
    /// running variance averages the unbiased batch variance.
    pub struct BatchNormStatsParams {
        pub mean: u64,
        pub inv_std: u64,
        pub running_mean: u64,
        pub running_var: u64,
        pub partial: u64,
        pub x: u64,
        pub eps: f32,
        pub momentum: f32,
        pub unbiased: u32,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormNormalizeParams`: x: (n, c, inner) -> y: same; mean, inv_std,
    /// gamma, beta: (c).
    pub struct BatchNormNormalizeParams {
        pub y: u64,
        pub x: u64,
        pub mean: u64,
        pub inv_std: u64,
        pub gamma: u64,
        pub beta: u64,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormGradSumsParams`: dy, x: (n, c, inner), mean: (c) ->
    /// partial: (c, chunks, 2), f64.
    pub struct BatchNormGradSumsParams {
        pub partial: u64,
        pub dy: u64,
        pub x: u64,
        pub mean: u64,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormGradFinishParams`: partial: (c, chunks, 2), inv_std: (c) ->
    /// dgamma, dbeta: (c), accumulated; coef: (c, 2).
    pub struct BatchNormGradFinishParams {
        pub dgamma: u64,
        pub dbeta: u64,
        pub coef: u64,
        pub partial: u64,
        pub inv_std: u64,
        pub batch_stats: u32,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormInputGradParams`: dy, x: (n, c, inner) -> dx: same; gamma, mean,
    /// inv_std: (c); coef: (c, 2).
    pub struct BatchNormInputGradParams {
        pub dx: u64,
        pub dy: u64,
        pub x: u64,
        pub gamma: u64,
        pub mean: u64,
        pub inv_std: u64,
        pub coef: u64,
        pub g: BatchNormGeom,
    }
}

pub const BATCHNORM_MOMENTS_PARTIAL: Kernel<BatchNormMomentsParams> =
    kernel!(MODULE, batchnorm_moments_partial);
pub const BATCHNORM_MOMENTS_FINISH: Kernel<BatchNormStatsParams> =
    kernel!(MODULE, batchnorm_moments_finish);
pub const BATCHNORM_RUNNING_STATS: Kernel<BatchNormStatsParams> =
    kernel!(MODULE, batchnorm_running_stats);
pub const BATCHNORM_NORMALIZE: Kernel<BatchNormNormalizeParams> =
    kernel!(MODULE, batchnorm_normalize);
pub const BATCHNORM_GRAD_PARTIAL: Kernel<BatchNormGradSumsParams> =
    kernel!(MODULE, batchnorm_grad_partial);
pub const BATCHNORM_GRAD_FINISH: Kernel<BatchNormGradFinishParams> =
    kernel!(MODULE, batchnorm_grad_finish);
pub const BATCHNORM_INPUT_GRAD: Kernel<BatchNormInputGradParams> =
    kernel!(MODULE, batchnorm_input_grad);

/// Threads per block of the batch-norm kernels: `BATCHNORM_THREADS` of batchnorm.cu.
pub const BATCHNORM_THREADS: u32 = define(MODULE.source, "BATCHNORM_THREADS");

/// Blocks the `*_partial` launches aim at: about four waves of an H100 (132 multiprocessors,
/// 8 blocks of 256 threads each), so that the last wave's tail costs little.
const PARTIAL_TARGET_BLOCKS: usize = 4096;

/// Fewest values per chunk (16 per thread), so that a block's reduction and its write of the
/// partial sums stay small beside its loads.
const MIN_CHUNK_LEN: usize = 16 * BATCHNORM_THREADS as usize;

/// How the M values of each of `c` channels are split for the `*_partial` launches:
/// (chunks, chunk_len), chunk_len a multiple of 4 (whole float4 quads), every chunk non-empty,
/// the last one possibly shorter. A function of the shape only, so the sums' order is too.
pub fn partial_chunks(c: usize, m: usize) -> (usize, usize) {
    let wanted = PARTIAL_TARGET_BLOCKS.div_ceil(c);
    let chunks = wanted.clamp(1, (m / MIN_CHUNK_LEN).max(1));
    let chunk_len = m.div_ceil(chunks).next_multiple_of(4);
    (m.div_ceil(chunk_len), chunk_len)
}

/// x's `dims`, (N, C, H, W) or (N, F), viewed as (n, c, inner), checked to fit 32 bits and split
/// by [`partial_chunks`]; float4 access when inner % 4 == 0 and every address in `arrays` (the
/// (n, c, inner) arrays of the launches) is 16-byte aligned.
fn geom(op: &'static str, dims: &[usize], arrays: &[u64]) -> Result<BatchNormGeom> {
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
    let (chunks, chunk_len) = partial_chunks(c, n * inner);
    let vec4 = inner % 4 == 0 && arrays.iter().all(|a| a % 16 == 0);
    Ok(BatchNormGeom {
        n: n as u32,
        c: c as u32,
        inner: inner as u32,
        chunks: chunks as u32,
        chunk_len: chunk_len as u32,
        vec4: u32::from(vec4),
    })
}

/// A `*_partial` launch: one block per (channel, chunk).
fn partial_launch(g: &BatchNormGeom) -> LaunchConfig {
    LaunchConfig::linear(g.c * g.chunks, BATCHNORM_THREADS, 0)
}

/// A `*_finish` or running-statistics launch: one thread per channel.
fn per_channel_launch(g: &BatchNormGeom) -> LaunchConfig {
    LaunchConfig::linear(g.c.div_ceil(BATCHNORM_THREADS), BATCHNORM_THREADS, 0)
}

/// An elementwise launch over all n * c * inner values, float4 quads when `vec4`.
fn elementwise_launch(g: &BatchNormGeom) -> LaunchConfig {
    let values = (g.n * g.c * g.inner) as usize;
    LaunchConfig::elementwise(if g.vec4 == 1 { values / 4 } else { values })
}

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

/// Checks that each buffer of `values` holds n * c * inner values and each of `per_channel` c.
fn check_lens<B: Backend>(
    dev: &B,
    op: &'static str,
    g: &BatchNormGeom,
    values: &[(&str, &B::Buf<f32>)],
    per_channel: &[(&str, &B::Buf<f32>)],
) -> Result<()> {
    for &(what, buf) in values {
        check_len(dev, op, what, buf, (g.n * g.c * g.inner) as usize)?;
    }
    for &(what, buf) in per_channel {
        check_len(dev, op, what, buf, g.c as usize)?;
    }
    Ok(())
}

/// Room for the `*_partial` kernels' sums: (c, chunks, 2) f64.
fn partial_sums<B: Backend>(dev: &B, g: &BatchNormGeom) -> Result<B::Buf<f64>> {
    dev.alloc::<f64>((g.c * g.chunks * 2) as usize)
}

/// Training-mode forward, as [`crate::batchnorm::batchnorm_forward_train`]: normalises with the
/// batch statistics and updates the running ones in place. Three launches: the chunks' shifted
/// sums, the per-channel statistics, the normalising pass.
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
    let (x_addr, y_addr) = (dev.addr(x), dev.addr_mut(y));
    let g = geom(OP, dims, &[x_addr, y_addr])?;
    check_lens(
        dev,
        OP,
        &g,
        &[("x", x), ("y", &*y)],
        &[
            ("gamma", ch.gamma),
            ("beta", ch.beta),
            ("running_mean", &*ch.running_mean),
            ("running_var", &*ch.running_var),
            ("mean", &*stats.mean),
            ("inv_std", &*stats.inv_std),
        ],
    )?;
    if g.n * g.inner < 2 {
        return Err(Error::Shape {
            op: OP,
            msg: format!(
                "x has dims {dims:?}: {} value per channel, batch statistics need at least 2",
                g.n * g.inner
            ),
        });
    }
    let mut partial = partial_sums(dev, &g)?;
    let moments = BatchNormMomentsParams {
        partial: dev.addr_mut(&mut partial),
        x: x_addr,
        g,
    };
    // SAFETY: x holds n*c*inner values, partial c*chunks*2; block (ch, chunk) reads the values of
    // its chunk of channel ch and writes its own two sums.
    unsafe { dev.launch(BATCHNORM_MOMENTS_PARTIAL, partial_launch(&g), &moments) }?;
    let (mean, inv_std) = (dev.addr_mut(stats.mean), dev.addr_mut(stats.inv_std));
    let finish = BatchNormStatsParams {
        mean,
        inv_std,
        running_mean: dev.addr_mut(ch.running_mean),
        running_var: dev.addr_mut(ch.running_var),
        partial: dev.addr(&partial),
        x: x_addr,
        eps: cfg.eps,
        momentum: cfg.momentum,
        unbiased: (cfg.running_variance == RunningVariance::Unbiased) as u32,
        g,
    };
    // SAFETY: the per-channel buffers hold c values, partial c*chunks*2; thread ch < c touches
    // channel ch only.
    unsafe { dev.launch(BATCHNORM_MOMENTS_FINISH, per_channel_launch(&g), &finish) }?;
    let normalize = BatchNormNormalizeParams {
        y: y_addr,
        x: x_addr,
        mean,
        inv_std,
        gamma: dev.addr(ch.gamma),
        beta: dev.addr(ch.beta),
        g,
    };
    // SAFETY: x and y hold n*c*inner values (checked, 16-byte aligned when vec4), the
    // per-channel buffers c.
    unsafe { launch_normalize(dev, &normalize) }
}

/// y = gamma (x - mean) inv_std + beta over every value: the last launch of both forwards.
///
/// # Safety
/// `p`'s arrays hold what `p.g` says: x and y n*c*inner values (16-byte aligned when vec4), mean,
/// inv_std, gamma and beta c values. The grid-stride loop stays below n*c*inner and reads the
/// per-channel arrays at channels below c.
unsafe fn launch_normalize<B: Backend>(dev: &B, p: &BatchNormNormalizeParams) -> Result<()> {
    // SAFETY: as the caller guarantees.
    unsafe { dev.launch(BATCHNORM_NORMALIZE, elementwise_launch(&p.g), p) }
}

/// Evaluation-mode forward, as [`crate::batchnorm::batchnorm_forward_eval`]: normalises with the
/// running statistics, read only (a negative running variance gives NaN here, where
/// the CPU returns an error: checking would cost a host read). Two launches: the per-channel
/// statistics, the normalising pass.
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
    let (x_addr, y_addr) = (dev.addr(x), dev.addr_mut(y));
    let g = geom(OP, dims, &[x_addr, y_addr])?;
    check_lens(
        dev,
        OP,
        &g,
        &[("x", x), ("y", &*y)],
        &[
            ("gamma", ch.gamma),
            ("beta", ch.beta),
            ("running_mean", ch.running_mean),
            ("running_var", ch.running_var),
            ("mean", &*stats.mean),
            ("inv_std", &*stats.inv_std),
        ],
    )?;
    let (mean, inv_std) = (dev.addr_mut(stats.mean), dev.addr_mut(stats.inv_std));
    let running = BatchNormStatsParams {
        mean,
        inv_std,
        running_mean: dev.addr(ch.running_mean),
        running_var: dev.addr(ch.running_var),
        partial: 0,
        x: 0,
        eps,
        momentum: 0.0,
        unbiased: 0,
        g,
    };
    // SAFETY: the per-channel buffers hold c values; thread ch < c reads the running statistics
    // of channel ch and writes its mean and inv_std (partial and x are not read).
    unsafe { dev.launch(BATCHNORM_RUNNING_STATS, per_channel_launch(&g), &running) }?;
    let normalize = BatchNormNormalizeParams {
        y: y_addr,
        x: x_addr,
        mean,
        inv_std,
        gamma: dev.addr(ch.gamma),
        beta: dev.addr(ch.beta),
        g,
    };
    // SAFETY: x and y hold n*c*inner values (checked, 16-byte aligned when vec4), the
    // per-channel buffers c.
    unsafe { launch_normalize(dev, &normalize) }
}

/// The statistics a forward wrote, read by backward: mean and inv_std (C,) each, and which
/// statistics they are.
pub struct BatchNormSaved<'a, B: Backend> {
    pub mean: &'a B::Buf<f32>,
    pub inv_std: &'a B::Buf<f32>,
    pub source: StatsSource,
}

/// Backward of either forward, as [`crate::batchnorm::batchnorm_backward`]. Three launches: the
/// chunks' sums of dy and dy * (x - mean), the per-channel sums (into dgamma and dbeta) and
/// means, the input gradient.
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
    let (dy_addr, x_addr, dx_addr) = (dev.addr(dy), dev.addr(x), dev.addr_mut(dx));
    let g = geom(OP, dims, &[dy_addr, x_addr, dx_addr])?;
    check_lens(
        dev,
        OP,
        &g,
        &[("dy", dy), ("x", x), ("dx", &*dx)],
        &[
            ("gamma", gamma),
            ("dgamma", &*dgamma),
            ("dbeta", &*dbeta),
            ("mean", saved.mean),
            ("inv_std", saved.inv_std),
        ],
    )?;
    let (mean, inv_std) = (dev.addr(saved.mean), dev.addr(saved.inv_std));
    let mut partial = partial_sums(dev, &g)?;
    let sums = BatchNormGradSumsParams {
        partial: dev.addr_mut(&mut partial),
        dy: dy_addr,
        x: x_addr,
        mean,
        g,
    };
    // SAFETY: dy and x hold n*c*inner values, mean c, partial c*chunks*2; block (ch, chunk)
    // reads the values of its chunk of channel ch and writes its own two sums.
    unsafe { dev.launch(BATCHNORM_GRAD_PARTIAL, partial_launch(&g), &sums) }?;
    let mut coef = dev.alloc::<f32>(2 * g.c as usize)?;
    let coef_addr = dev.addr_mut(&mut coef);
    let finish = BatchNormGradFinishParams {
        dgamma: dev.addr_mut(dgamma),
        dbeta: dev.addr_mut(dbeta),
        coef: coef_addr,
        partial: dev.addr(&partial),
        inv_std,
        batch_stats: u32::from(saved.source == StatsSource::Batch),
        g,
    };
    // SAFETY: dgamma, dbeta and inv_std hold c values, coef 2c, partial c*chunks*2; thread
    // ch < c touches channel ch only.
    unsafe { dev.launch(BATCHNORM_GRAD_FINISH, per_channel_launch(&g), &finish) }?;
    let input_grad = BatchNormInputGradParams {
        dx: dx_addr,
        dy: dy_addr,
        x: x_addr,
        gamma: dev.addr(gamma),
        mean,
        inv_std,
        coef: coef_addr,
        g,
    };
    // SAFETY: dx, dy and x hold n*c*inner values (16-byte aligned when vec4), the per-channel
    // buffers c, coef 2c; the grid-stride loop stays below n*c*inner.
    unsafe { dev.launch(BATCHNORM_INPUT_GRAD, elementwise_launch(&g), &input_grad) }
}

#[cfg(test)]
mod tests {
    use super::partial_chunks;

    /// Every chunk non-empty, chunk_len a multiple of 4, the chunks covering exactly M values.
    #[test]
    fn partial_chunks_cover_each_channel() {
        for (c, m) in [
            (128, 256_000),
            (512, 16_000),
            (4096, 250),
            (3, 8613),
            (2, 11_700),
            (1, 1),
            (7, 4097),
        ] {
            let (chunks, len) = partial_chunks(c, m);
            assert!(chunks >= 1 && len % 4 == 0, "c {c} m {m}: {chunks} x {len}");
            assert!((chunks - 1) * len < m && m <= chunks * len, "c {c} m {m}");
        }
        // The seed's widest layer: 32 chunks of 8000 values, 4096 blocks.
        assert_eq!(partial_chunks(128, 256_000), (32, 8000));
        assert_eq!(partial_chunks(4096, 250), (1, 252));
    }
}

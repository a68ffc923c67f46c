//! Batch norm: the CPU functions against the emulated kernels, train and eval, forward and
//! backward, on (N, C, H, W) maps and (N, F) rows, including channels split into several chunks
//! by the sums kernels. The tolerances allow for the different summation orders and for a GPU's
//! FMA contraction.

use super::cuda::{
    self, BatchNormChannels, BatchNormEvalChannels, BatchNormSaved, BatchNormStatsBufs,
};
use crate::batchnorm::{
    batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train, BatchNormConfig,
    BatchNormStats, RunningVariance, StatsSource,
};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, Tol, EXACT};
use tensor_core::Tensor;

/// Per-channel statistics (mean, inv_std, running averages): both sides sum in f64, in different orders
/// (serial on the CPU; here per thread, a thread-and-warp tree per chunk, then the chunks), and round the nearly equal doubles to f32
/// once: at most one f32 ulp apart (2^-23 relative), where a rounding boundary falls between them.
const BN_CHANNEL_TOL: Tol = Tol {
    atol: 1e-30,
    rtol: 1.2e-7,
};

/// dgamma and dbeta: one f32 ulp of a per-channel sum, as above, but of sums of up to a few
/// thousand values of order 1 (|sum| < 64, so an ulp below 8e-6), added to a start value that may
/// cancel most of it: absolute, in the sum's units.
const BN_GRAD_SUM_TOL: Tol = Tol {
    atol: 1e-5,
    rtol: 1.2e-7,
};

/// y and dx: f32 formulas of the per-channel constants above, so one ulp of a mean or inv_std
/// (about 6e-8 of values of order 1) moves them by that much times the scale, plus the GPU's
/// possible a * b + c contraction (NVRTC --fmad=true): a few ulps, absolute near zero crossings.
const BN_ELEMENT_TOL: Tol = Tol {
    atol: 2e-6,
    rtol: 1e-5,
};

on_emu_and_gpu!(
    emu_batchnorm_matches_cpu,
    gpu_batchnorm_matches_cpu,
    batchnorm_matches_cpu
);

/// The tensor `t` on the device.
fn up<B: Backend>(dev: &B, t: &Tensor) -> B::Buf<f32> {
    dev.upload(t.as_slice().unwrap()).unwrap()
}

/// A buffer of `n` NaNs: every value a kernel must write starts poisoned.
fn poisoned<B: Backend>(dev: &B, n: usize) -> B::Buf<f32> {
    dev.upload(&vec![f32::NAN; n]).unwrap()
}

fn channels<'a, B: Backend>(
    gamma: &'a B::Buf<f32>,
    beta: &'a B::Buf<f32>,
    running_mean: &'a mut B::Buf<f32>,
    running_var: &'a mut B::Buf<f32>,
) -> BatchNormChannels<'a, B> {
    BatchNormChannels {
        gamma,
        beta,
        running_mean,
        running_var,
    }
}

fn t(dims: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(dims, v).unwrap()
}

#[track_caller]
fn check<B: Backend>(dev: &B, what: &str, gpu: &B::Buf<f32>, cpu: &Tensor, tol: Tol) {
    assert_close(
        what,
        &dev.download(gpu).unwrap(),
        cpu.as_slice().unwrap(),
        tol,
    );
}

fn batchnorm_matches_cpu<B: Backend>(dev: &B) {
    // Odd maps, odd feature rows, one value per sample (inner 1 with many samples), the seed's
    // block-1 map size (16 x 16 after the first pool) at a reduced batch and width, and a
    // fully-connected layer's 250 rows. Then channels split into several chunks with a shorter
    // last one: planes of a multiple of 4 (float4 access, chunks starting mid-plane) and odd
    // planes (value by value, quads across planes, a partial last quad); the emulator runs one
    // block at a time, so these stay small.
    let cases: [&[usize]; 8] = [
        &[3, 5, 7, 9],
        &[7, 11],
        &[300, 3],
        &[16, 32, 16, 16],
        &[250, 96],
        &[13, 3, 30, 30],
        &[11, 2, 27, 29],
        &[9, 2, 37, 41],
    ];
    for &dims in &cases[5..] {
        let (chunks, len) = cuda::partial_chunks(dims[1], dims[0] * dims[2] * dims[3]);
        assert!(
            chunks > 1 && dims[0] * dims[2] * dims[3] % len != 0,
            "{dims:?}: {chunks} chunks of {len}, expected several with a shorter last one"
        );
    }
    for (s, &dims) in cases.iter().enumerate() {
        let seed = 200 + 10 * s as u64;
        let len: usize = dims.iter().product();
        let c = dims[1];
        // The running variance as the seed's layers take it: unbiased for maps, biased for rows
        // (at M = 7 rows the two differ by 7/6, far beyond the tolerance).
        let running_variance = match dims.len() {
            4 => RunningVariance::Unbiased,
            _ => RunningVariance::Biased,
        };
        let cfg = BatchNormConfig {
            running_variance,
            ..BatchNormConfig::default()
        };
        // Inputs off centre, so the mean matters; running variances > 0.
        let x = t(dims, uniform(seed, len, -1.0, 3.0));
        let gamma = t(&[c], uniform(seed + 1, c, 0.5, 1.5));
        let beta = t(&[c], uniform(seed + 2, c, -0.5, 0.5));
        let rm0 = t(&[c], uniform(seed + 3, c, -0.2, 0.2));
        let rv0 = t(&[c], uniform(seed + 4, c, 0.5, 2.0));
        let dy = t(dims, uniform(seed + 5, len, -1.0, 1.0));
        let dg0 = t(&[c], uniform(seed + 6, c, -1.0, 1.0));
        let db0 = t(&[c], uniform(seed + 7, c, -1.0, 1.0));

        // CPU: train forward and backward, then eval forward and backward.
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let mut y = Tensor::zeros(dims);
        let train =
            batchnorm_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg).unwrap();
        let (mut dx, mut dg, mut db) = (Tensor::zeros(dims), dg0.clone(), db0.clone());
        batchnorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gamma, &train).unwrap();
        let mut y_eval = Tensor::zeros(dims);
        let eval =
            batchnorm_forward_eval(&mut y_eval, &x, &gamma, &beta, &rm, &rv, cfg.eps).unwrap();
        let (mut dx_eval, mut dg_eval, mut db_eval) = (Tensor::zeros(dims), dg.clone(), db.clone());
        batchnorm_backward(
            &mut dx_eval,
            &mut dg_eval,
            &mut db_eval,
            &dy,
            &x,
            &gamma,
            &eval,
        )
        .unwrap();

        // Device: the same sequence on buffers.
        let (xb, gb, bb, dyb) = (up(dev, &x), up(dev, &gamma), up(dev, &beta), up(dev, &dy));
        let (mut rmb, mut rvb) = (up(dev, &rm0), up(dev, &rv0));
        let (mut meanb, mut invb) = (poisoned(dev, c), poisoned(dev, c));
        let mut yb = poisoned(dev, len);
        cuda::batchnorm_forward_train(
            dev,
            &mut yb,
            BatchNormStatsBufs {
                mean: &mut meanb,
                inv_std: &mut invb,
            },
            &xb,
            dims,
            channels(&gb, &bb, &mut rmb, &mut rvb),
            &cfg,
        )
        .unwrap();
        let what = |name: &str| format!("{dims:?} {name}");
        check(dev, &what("train y"), &yb, &y, BN_ELEMENT_TOL);
        check_stats(dev, &what("train"), &meanb, &invb, &train);
        check(dev, &what("running_mean"), &rmb, &rm, BN_CHANNEL_TOL);
        check(dev, &what("running_var"), &rvb, &rv, BN_CHANNEL_TOL);

        let mut dxb = poisoned(dev, len);
        let (mut dgb, mut dbb) = (up(dev, &dg0), up(dev, &db0));
        cuda::batchnorm_backward(
            dev,
            &mut dxb,
            &mut dgb,
            &mut dbb,
            &dyb,
            &xb,
            dims,
            &gb,
            BatchNormSaved {
                mean: &meanb,
                inv_std: &invb,
                source: StatsSource::Batch,
            },
        )
        .unwrap();
        check(dev, &what("train dx"), &dxb, &dx, BN_ELEMENT_TOL);
        check(dev, &what("train dgamma"), &dgb, &dg, BN_GRAD_SUM_TOL);
        check(dev, &what("train dbeta"), &dbb, &db, BN_GRAD_SUM_TOL);

        // Eval from the CPU's running statistics, so both normalise with the very same values.
        let (rmb, rvb) = (up(dev, &rm), up(dev, &rv));
        let (mut meanb, mut invb) = (poisoned(dev, c), poisoned(dev, c));
        let mut yb = poisoned(dev, len);
        cuda::batchnorm_forward_eval(
            dev,
            &mut yb,
            BatchNormStatsBufs {
                mean: &mut meanb,
                inv_std: &mut invb,
            },
            &xb,
            dims,
            BatchNormEvalChannels {
                gamma: &gb,
                beta: &bb,
                running_mean: &rmb,
                running_var: &rvb,
            },
            cfg.eps,
        )
        .unwrap();
        check(dev, &what("eval y"), &yb, &y_eval, BN_ELEMENT_TOL);
        check_stats(dev, &what("eval"), &meanb, &invb, &eval);
        // Eval takes the running statistics by shared reference and must leave them as they were.
        check(dev, &what("eval running_mean"), &rmb, &rm, EXACT);
        check(dev, &what("eval running_var"), &rvb, &rv, EXACT);
        let (mut dgb, mut dbb) = (up(dev, &dg), up(dev, &db));
        cuda::batchnorm_backward(
            dev,
            &mut dxb,
            &mut dgb,
            &mut dbb,
            &dyb,
            &xb,
            dims,
            &gb,
            BatchNormSaved {
                mean: &meanb,
                inv_std: &invb,
                source: StatsSource::Running,
            },
        )
        .unwrap();
        check(dev, &what("eval dx"), &dxb, &dx_eval, BN_ELEMENT_TOL);
        check(dev, &what("eval dgamma"), &dgb, &dg_eval, BN_GRAD_SUM_TOL);
        check(dev, &what("eval dbeta"), &dbb, &db_eval, BN_GRAD_SUM_TOL);
    }
    refusals(dev);
}

fn check_stats<B: Backend>(
    dev: &B,
    what: &str,
    mean: &B::Buf<f32>,
    inv: &B::Buf<f32>,
    cpu: &BatchNormStats,
) {
    check(
        dev,
        &format!("{what} mean"),
        mean,
        &cpu.mean,
        BN_CHANNEL_TOL,
    );
    check(
        dev,
        &format!("{what} inv_std"),
        inv,
        &cpu.inv_std,
        BN_CHANNEL_TOL,
    );
}

fn refusals<B: Backend>(dev: &B) {
    let (g, b) = (poisoned(dev, 3), poisoned(dev, 3));
    let (mut rm, mut rv, mut mean) = (poisoned(dev, 3), poisoned(dev, 3), poisoned(dev, 3));
    let mut train = |dims: &[usize], inv_len: usize| {
        let len = dims.iter().product();
        let (x, mut y, mut inv) = (
            poisoned(dev, len),
            poisoned(dev, len),
            poisoned(dev, inv_len),
        );
        cuda::batchnorm_forward_train(
            dev,
            &mut y,
            BatchNormStatsBufs {
                mean: &mut mean,
                inv_std: &mut inv,
            },
            &x,
            dims,
            BatchNormChannels {
                gamma: &g,
                beta: &b,
                running_mean: &mut rm,
                running_var: &mut rv,
            },
            &BatchNormConfig::default(),
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        train(&[4, 3], 2),
        "cuda batchnorm_forward_train: inv_std holds 2 values, expected 3"
    );
    assert_eq!(
        train(&[2, 3, 2], 3),
        "cuda batchnorm_forward_train: x has dims [2, 3, 2], expected (N, C, H, W) or (N, F)"
    );
    assert_eq!(
        train(&[1, 3, 1, 1], 3),
        "cuda batchnorm_forward_train: x has dims [1, 3, 1, 1]: 1 value per channel, \
         batch statistics need at least 2"
    );
}

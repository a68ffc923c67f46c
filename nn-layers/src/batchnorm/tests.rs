use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;
use crate::gradcheck::{Probe, Tolerance};
use kernels::batchnorm::RunningVariance;

/// Batch norm is smooth, so central differences with step EPS are off by O(EPS^2) plus the f32
/// rounding of the forward (about 1e-6 of the loss) divided by 2 EPS.
const BN_TOL: Tolerance = Tolerance {
    atol: 1e-3,
    rtol: 1e-2,
};
const EPS: f32 = 1e-2;

fn random(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    Tensor::uniform(shape, lo, hi, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

/// A layer with random weight, bias and running statistics, so that no term is trivially 0 or 1.
fn random_layer<const R: usize>(channels: usize, seed: u64) -> BatchNorm<R> {
    let mut bn = BatchNorm::<R>::new(channels).unwrap();
    bn.weight.value = random(&[channels], 0.5, 1.5, seed);
    bn.bias.value = random(&[channels], -1.0, 1.0, seed + 1);
    bn.running_mean = random(&[channels], -1.0, 1.0, seed + 2);
    bn.running_var = random(&[channels], 0.5, 2.0, seed + 3);
    bn
}

/// Compares dx, dweight and dbias from `backward` with central differences of sum(y * r).
fn gradcheck<const R: usize>(layer: &BatchNorm<R>, x: &Tensor, mode: Mode) {
    let r = random(x.dims(), -1.0, 1.0, 99);
    let mut analytic = layer.clone();
    let (_, cache) = analytic.forward(x.clone(), mode).unwrap();
    let dx = analytic.backward(&r, cache).unwrap();
    // A copy of the layer each time: a training forward updates the running statistics.
    let forward = |l: &BatchNorm<R>, x: Tensor| l.clone().forward(x, mode).unwrap().0;
    let probe = Probe::new(&r, EPS, BN_TOL);
    probe.assert_gradient("dx", x, &dx, |x| forward(layer, x));
    probe.assert_param_gradients("BatchNorm", &mut analytic, |l| forward(l, x.clone()));
}

#[test]
fn batchnorm2d_gradients_in_train_mode() {
    let x = random(&[3, 2, 3, 5], -2.0, 2.0, 1);
    gradcheck(&random_layer::<4>(2, 10), &x, Mode::Train);
}

#[test]
fn batchnorm2d_gradients_in_eval_mode() {
    let x = random(&[3, 2, 3, 5], -2.0, 2.0, 2);
    gradcheck(&random_layer::<4>(2, 20), &x, Mode::Eval);
}

#[test]
fn batchnorm1d_gradients_in_train_mode() {
    let x = random(&[5, 3], -2.0, 2.0, 3);
    gradcheck(&random_layer::<2>(3, 30), &x, Mode::Train);
}

#[test]
fn batchnorm1d_gradients_in_eval_mode() {
    let x = random(&[5, 3], -2.0, 2.0, 4);
    gradcheck(&random_layer::<2>(3, 40), &x, Mode::Eval);
}

fn buffers<P: Parameters>(layer: &mut P) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    layer.visit_buffers("bn", &mut |name, t| {
        out.push((name.to_string(), t.to_vec()))
    });
    out
}

#[test]
fn names_and_initial_values_follow_pytorch() {
    let mut bn = BatchNorm2d::new(3).unwrap();
    let mut params = Vec::new();
    bn.visit_params("block.bn1", &mut |name, p| {
        params.push((name.to_string(), p.value.to_vec()))
    });
    assert_eq!(
        params,
        vec![
            ("block.bn1.weight".to_string(), vec![1.0; 3]),
            ("block.bn1.bias".to_string(), vec![0.0; 3]),
        ]
    );
    assert_eq!(
        buffers(&mut bn),
        vec![
            ("bn.running_mean".to_string(), vec![0.0; 3]),
            ("bn.running_var".to_string(), vec![1.0; 3]),
        ]
    );
}

#[test]
fn running_statistics_after_two_known_batches() {
    // Feature 0: batch 1 is 1, 2, 3, 4 (mean 2.5, unbiased var 5/3), batch 2 is 0, 0, 6, 6
    // (mean 3, unbiased var 12). Feature 1: 5, 5, 5, 5 (mean 5, var 0), then -1, 1, -1, 1
    // (mean 0, unbiased var 4/3).
    let b1 = Tensor::from_vec([4, 2], vec![1., 5., 2., 5., 3., 5., 4., 5.]).unwrap();
    let b2 = Tensor::from_vec([4, 2], vec![0., -1., 0., 1., 6., -1., 6., 1.]).unwrap();
    let mut bn = BatchNorm1d::new(2).unwrap();
    bn.forward(b1, Mode::Train).unwrap();
    bn.forward(b2, Mode::Train).unwrap();
    // r = 0.997 r + 0.003 b, twice (worked in kernels::batchnorm's tests):
    let want = [
        ("bn.running_mean", [0.0164775f32, 0.014955]),
        ("bn.running_var", [1.034994, 0.998009]),
    ];
    for ((name, got), (want_name, want)) in buffers(&mut bn).iter().zip(want) {
        assert_eq!(name, want_name);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{name}: got {got:?}, want {want:?}");
        }
    }
}

/// Per channel (mean, biased variance) of x viewed as (N, C, inner), in f64.
fn channel_stats(x: &Tensor) -> Vec<(f64, f64)> {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let inner = x.len() / (n * c);
    let v = x.as_slice().unwrap();
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|s| &v[(s * c + ch) * inner..][..inner])
                .map(|&a| a as f64)
                .collect();
            let m = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / m;
            let var = vals.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / m;
            (mean, var)
        })
        .collect()
}

/// Precise batch norm: passes in `Mode::RecomputeStats` with averaged = 0, 1, 2 leave the mean of
/// the three batches' statistics, whatever the running statistics were before, each variance of
/// the layer's kind; the output is the training forward's.
#[test]
fn recompute_stats_averages_the_batches_with_equal_weights() {
    for kind in [RunningVariance::Unbiased, RunningVariance::Biased] {
        let mut bn = random_layer::<4>(3, 60);
        bn.config.running_variance = kind;
        let batches: Vec<Tensor> = (0..3)
            .map(|i| random(&[2, 3, 3, 2], -1.0 + i as f32, 2.0 * i as f32 + 1.5, 61 + i))
            .collect();
        for (i, x) in batches.iter().enumerate() {
            let (y, _) = bn
                .forward(x.clone(), Mode::RecomputeStats { averaged: i as u32 })
                .unwrap();
            let (want, _) = bn.clone().forward(x.clone(), Mode::Train).unwrap();
            assert_eq!(y.to_vec(), want.to_vec(), "batch {i}: the training output");
        }
        let m = 2.0 * 3.0 * 2.0;
        let factor = kind.factor(12);
        assert_eq!(
            factor,
            if kind == RunningVariance::Unbiased {
                m / (m - 1.0)
            } else {
                1.0
            }
        );
        for ch in 0..3 {
            let stats: Vec<(f64, f64)> = batches.iter().map(|x| channel_stats(x)[ch]).collect();
            let mean = stats.iter().map(|s| s.0).sum::<f64>() / 3.0;
            let var = stats.iter().map(|s| s.1 * factor).sum::<f64>() / 3.0;
            let (rm, rv) = (bn.running_mean.to_vec()[ch], bn.running_var.to_vec()[ch]);
            // Three f32 roundings of values of order 1, and the f32 weights 1/2 and 2/3.
            assert!(
                (rm as f64 - mean).abs() < 1e-6,
                "{kind:?} mean[{ch}]: {rm} vs {mean}"
            );
            assert!(
                (rv as f64 - var).abs() < 1e-6,
                "{kind:?} var[{ch}]: {rv} vs {var}"
            );
        }
    }
}

#[test]
fn eval_mode_uses_the_running_statistics() {
    let mut bn = random_layer::<4>(3, 50);
    for seed in 0..3 {
        bn.forward(random(&[4, 3, 5, 5], -1.0, 3.0, seed), Mode::Train)
            .unwrap();
    }
    let (rm, rv) = (bn.running_mean.clone(), bn.running_var.clone());
    let x = random(&[2, 3, 5, 5], -1.0, 3.0, 60);
    let (y, _) = bn.forward(x.clone(), Mode::Eval).unwrap();
    assert_eq!(
        (&bn.running_mean, &bn.running_var),
        (&rm, &rv),
        "eval keeps them"
    );
    let (g, b) = (bn.weight.value.to_vec(), bn.bias.value.to_vec());
    let (rm, rv) = (rm.to_vec(), rv.to_vec());
    for (i, (&yv, &xv)) in y.to_vec().iter().zip(&x.to_vec()).enumerate() {
        let c = (i / 25) % 3;
        let want = g[c] * (xv - rm[c]) / (rv[c] + 1e-5).sqrt() + b[c];
        assert!((yv - want).abs() < 1e-5, "y[{i}]: got {yv}, want {want}");
    }
    // Each sample is normalised on its own: the first sample alone gives the same output.
    let first = Tensor::from_vec([1, 3, 5, 5], x.to_vec()[..75].to_vec()).unwrap();
    let (y1, _) = bn.forward(first, Mode::Eval).unwrap();
    assert_eq!(y1.to_vec(), y.to_vec()[..75].to_vec());
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    let x = random(&[4, 5, 9, 7], -2.0, 2.0, 70);
    let dy = random(&[4, 5, 9, 7], -1.0, 1.0, 71);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut bn = random_layer::<4>(5, 72);
                let (y, cache) = bn.forward(x.clone(), Mode::Train).unwrap();
                let dx = bn.backward(&dy, cache).unwrap();
                [
                    y,
                    dx,
                    bn.weight.grad,
                    bn.bias.grad,
                    bn.running_mean,
                    bn.running_var,
                ]
                .map(|t| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn bad_shapes_name_the_layer_and_the_shapes() {
    let mut bn = BatchNorm2d::new(3).unwrap();
    let e = bn
        .forward(Tensor::zeros([2, 4, 5, 5]), Mode::Train)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "BatchNorm2d: x has shape (2, 4, 5, 5), expected (N, 3, H, W)"
    );
    let mut bn1 = BatchNorm1d::new(3).unwrap();
    let e = bn1
        .forward(Tensor::zeros([2, 3, 1, 1]), Mode::Eval)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "BatchNorm1d: x has shape (2, 3, 1, 1), expected (N, 3)"
    );
    let (_, cache) = bn
        .forward(random(&[2, 3, 4, 4], -1.0, 1.0, 80), Mode::Train)
        .unwrap();
    let e = bn
        .backward(&Tensor::zeros([2, 3, 4, 5]), cache)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "batchnorm_backward: dy has shape (2, 3, 4, 5), expected (2, 3, 4, 4)"
    );
    let e = BatchNorm2d::new(0).unwrap_err();
    assert_eq!(e.to_string(), "BatchNorm2d: 0 channels");
    let e = BatchNorm1d::with_config(
        2,
        BatchNormConfig {
            eps: 0.0,
            momentum: 0.9,
            ..BatchNormConfig::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "BatchNorm1d: eps 0 must be finite and > 0");
}

#[test]
fn recompute_output_gives_the_forwards_bits() {
    let mut bn = random_layer::<4>(3, 40);
    let x = random(&[4, 3, 5, 5], -2.0, 3.0, 44);
    let (y, cache) = bn.forward(x, Mode::Train).unwrap();
    assert_eq!(bn.recompute_output(&cache).unwrap().to_vec(), y.to_vec());
}

#[test]
fn forward_relu_is_forward_then_relu_in_every_mode() {
    let x = random(&[4, 3, 5, 5], -2.0, 3.0, 45);
    let modes = [
        Mode::Train,
        Mode::RecomputeStats { averaged: 2 },
        Mode::Eval,
    ];
    for mode in modes {
        let (mut bn, mut fused) = (random_layer::<4>(3, 41), random_layer::<4>(3, 41));
        let (y, cache) = bn.forward(x.clone(), mode).unwrap();
        let (y, relu) = crate::ReLU.forward(y, mode).unwrap();
        let (fy, fcache, frelu) = fused.forward_relu(x.clone(), mode).unwrap();
        assert_eq!(fy.to_vec(), y.to_vec(), "{mode:?}");
        assert_eq!(frelu, relu, "{mode:?}");
        assert_eq!(fcache.stats, cache.stats, "{mode:?}");
        assert_eq!(
            fused.running_mean.to_vec(),
            bn.running_mean.to_vec(),
            "{mode:?}"
        );
        assert_eq!(
            fused.running_var.to_vec(),
            bn.running_var.to_vec(),
            "{mode:?}"
        );
        let again = fused.recompute_relu_output(&fcache).unwrap();
        assert_eq!(again.to_vec(), fy.to_vec(), "{mode:?}");
    }
}

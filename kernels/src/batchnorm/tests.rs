use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;

/// Float tolerance for results computed by hand in f64 and rounded to f32 once or twice.
const HAND_TOL: f32 = 1e-6;

fn random(shape: &[usize], seed: u64) -> Tensor {
    Tensor::uniform(shape, -2.0, 2.0, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

/// Runs a training forward with fresh running statistics (mean 0, var 1) and gamma 1, beta 0.
fn train_unit(x: &Tensor) -> (Tensor, BatchNormStats, Tensor, Tensor) {
    let c = x.dims()[1];
    let mut y = Tensor::zeros(x.shape().clone());
    let (mut rm, mut rv) = (Tensor::zeros([c]), Tensor::full([c], 1.0));
    let stats = batchnorm_forward_train(
        &mut y,
        x,
        &Tensor::full([c], 1.0),
        &Tensor::zeros([c]),
        &mut rm,
        &mut rv,
        &BatchNormConfig::default(),
    )
    .unwrap();
    (y, stats, rm, rv)
}

#[test]
fn train_forward_normalises_each_channel_of_a_known_batch() {
    // (N, F) = (4, 2): feature 0 is 1, 2, 3, 4 (mean 2.5, biased var 1.25); feature 1 is 5, 5, 7, 7
    // (mean 6, var 1).
    let x = Tensor::from_vec([4, 2], vec![1., 5., 2., 5., 3., 7., 4., 7.]).unwrap();
    let (y, stats, _, _) = train_unit(&x);
    let inv0 = 1.0 / (1.25f64 + 1e-5).sqrt();
    let inv1 = 1.0 / (1.0f64 + 1e-5).sqrt();
    let want: Vec<f32> = [
        -1.5 * inv0,
        -inv1,
        -0.5 * inv0,
        -inv1,
        0.5 * inv0,
        inv1,
        1.5 * inv0,
        inv1,
    ]
    .iter()
    .map(|&v| v as f32)
    .collect();
    assert_close("y", y.as_slice().unwrap(), &want, HAND_TOL);
    assert_close(
        "mean",
        stats.mean.as_slice().unwrap(),
        &[2.5, 6.0],
        HAND_TOL,
    );
    assert_close(
        "inv_std",
        stats.inv_std.as_slice().unwrap(),
        &[inv0 as f32, inv1 as f32],
        HAND_TOL,
    );
    assert_eq!(stats.source, StatsSource::Batch);
}

#[test]
fn gamma_and_beta_scale_and_shift_the_normalised_maps() {
    let x = random(&[3, 2, 5, 7], 1);
    let (unit, _, _, _) = train_unit(&x);
    let mut y = Tensor::zeros([3, 2, 5, 7]);
    let (mut rm, mut rv) = (Tensor::zeros([2]), Tensor::full([2], 1.0));
    let gamma = Tensor::from_vec([2], vec![2.0, -0.5]).unwrap();
    let beta = Tensor::from_vec([2], vec![0.25, 3.0]).unwrap();
    let cfg = BatchNormConfig::default();
    batchnorm_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg).unwrap();
    let want: Vec<f32> = unit
        .as_slice()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, &u)| match (i / 35) % 2 {
            0 => 2.0 * u + 0.25,
            _ => -0.5 * u + 3.0,
        })
        .collect();
    assert_close("y", y.as_slice().unwrap(), &want, 1e-5);
    // Each normalised channel has mean 0 and (biased) variance var / (var + eps), about 1.
    for ch in 0..2 {
        let v: Vec<f64> = (0..3)
            .flat_map(|s| unit.as_slice().unwrap()[(s * 2 + ch) * 35..][..35].to_vec())
            .map(|v| v as f64)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 1e-6, "channel {ch}: mean {mean}");
        assert!((var - 1.0).abs() < 1e-4, "channel {ch}: var {var}");
    }
}

/// Two training forwards from fresh running statistics (mean 0, var 1) with gamma 1, beta 0 and
/// the seed's momentum, the running variance of `kind`: the running (mean, var) after them.
fn running_after(batches: [&Tensor; 2], kind: RunningVariance) -> (Vec<f32>, Vec<f32>) {
    let c = batches[0].dims()[1];
    let (gamma, beta) = (Tensor::full([c], 1.0), Tensor::zeros([c]));
    let (mut rm, mut rv) = (Tensor::zeros([c]), Tensor::full([c], 1.0));
    let mut y = Tensor::zeros(batches[0].shape().clone());
    let cfg = BatchNormConfig {
        running_variance: kind,
        ..BatchNormConfig::default()
    };
    for b in batches {
        batchnorm_forward_train(&mut y, b, &gamma, &beta, &mut rm, &mut rv, &cfg).unwrap();
    }
    (rm.to_vec(), rv.to_vec())
}

#[test]
fn running_statistics_after_two_known_batches() {
    // (N, C, H, W) = (2, 2, 1, 2). Channel 0 of batch 1 is 1, 2 | 3, 4: mean 2.5, biased var 1.25,
    // unbiased 5/3. Channel 1 of batch 1 is 5, 5 | 5, 5: mean 5, var 0.
    let b1 = Tensor::from_vec([2, 2, 1, 2], vec![1., 2., 5., 5., 3., 4., 5., 5.]).unwrap();
    // Channel 0 of batch 2 is 0, 0 | 6, 6: mean 3, biased var 9, unbiased 36/3 = 12.
    // Channel 1 of batch 2 is -1, 1 | -1, 1: mean 0, biased var 1, unbiased 4/3.
    let b2 = Tensor::from_vec([2, 2, 1, 2], vec![0., 0., -1., 1., 6., 6., -1., 1.]).unwrap();
    // r = 0.997 r + 0.003 b, twice, by hand; the means do not depend on the variance's kind:
    // mean0: 0.003 * 2.5 = 0.0075, then 0.997 * 0.0075 + 0.003 * 3 = 0.0164775
    // mean1: 0.003 * 5 = 0.015, then 0.997 * 0.015 + 0 = 0.014955
    let means = [0.0164775, 0.014955];
    // Unbiased (the conv layers'):
    // var0: 0.997 + 0.003 * 5/3 = 1.002, then 0.997 * 1.002 + 0.003 * 12 = 1.034994
    // var1: 0.997 + 0 = 0.997, then 0.997 * 0.997 + 0.003 * 4/3 = 0.998009
    // Biased (the FC layers'):
    // var0: 0.997 + 0.003 * 1.25 = 1.00075, then 0.997 * 1.00075 + 0.003 * 9 = 1.02474775
    // var1: 0.997, then 0.997 * 0.997 + 0.003 * 1 = 0.997009
    for (kind, vars) in [
        (RunningVariance::Unbiased, [1.034994, 0.998009]),
        (RunningVariance::Biased, [1.024_747_8, 0.997009]),
    ] {
        let (rm, rv) = running_after([&b1, &b2], kind);
        assert_close(&format!("{kind:?} running_mean"), &rm, &means, HAND_TOL);
        assert_close(&format!("{kind:?} running_var"), &rv, &vars, HAND_TOL);
    }
}

#[test]
fn the_seed_takes_the_unbiased_running_variance_by_default() {
    assert_eq!(
        BatchNormConfig::default().running_variance,
        RunningVariance::Unbiased
    );
    assert_eq!(RunningVariance::Unbiased.factor(4), 4.0 / 3.0);
    assert_eq!(RunningVariance::Biased.factor(4), 1.0);
}

#[test]
fn momentum_is_a_parameter() {
    let x = Tensor::from_vec([2, 1], vec![1.0, 3.0]).unwrap();
    let (mut rm, mut rv) = (Tensor::zeros([1]), Tensor::full([1], 1.0));
    let cfg = BatchNormConfig {
        momentum: 0.9,
        ..BatchNormConfig::default()
    };
    let (g, b) = (Tensor::full([1], 1.0), Tensor::zeros([1]));
    let mut y = Tensor::zeros([2, 1]);
    batchnorm_forward_train(&mut y, &x, &g, &b, &mut rm, &mut rv, &cfg).unwrap();
    // mean 2, unbiased var 2: 0.1 * 2 = 0.2 and 0.9 + 0.1 * 2 = 1.1.
    assert_close("running_mean", rm.as_slice().unwrap(), &[0.2], HAND_TOL);
    assert_close("running_var", rv.as_slice().unwrap(), &[1.1], HAND_TOL);
}

#[test]
fn eval_forward_uses_the_running_statistics_and_keeps_them() {
    let x = Tensor::from_vec([3, 2], vec![1., 0., 2., 10., -4., 4.]).unwrap();
    let rm = Tensor::from_vec([2], vec![0.5, 2.0]).unwrap();
    let rv = Tensor::from_vec([2], vec![4.0, 0.25]).unwrap();
    let gamma = Tensor::from_vec([2], vec![3.0, 1.0]).unwrap();
    let beta = Tensor::from_vec([2], vec![-1.0, 0.5]).unwrap();
    let mut y = Tensor::zeros([3, 2]);
    let stats = batchnorm_forward_eval(&mut y, &x, &gamma, &beta, &rm, &rv, 1e-5).unwrap();
    let inv0 = 1.0 / (4.0f64 + 1e-5).sqrt();
    let inv1 = 1.0 / (0.25f64 + 1e-5).sqrt();
    let want: Vec<f32> = [
        3.0 * 0.5 * inv0 - 1.0,
        -2.0 * inv1 + 0.5,
        3.0 * 1.5 * inv0 - 1.0,
        8.0 * inv1 + 0.5,
        3.0 * -4.5 * inv0 - 1.0,
        2.0 * inv1 + 0.5,
    ]
    .iter()
    .map(|&v| v as f32)
    .collect();
    assert_close("y", y.as_slice().unwrap(), &want, 1e-5);
    assert_eq!(stats.source, StatsSource::Running);
    assert_eq!(stats.mean, rm);
}

#[test]
fn eval_backward_treats_the_statistics_as_constants() {
    let x = random(&[2, 3, 3, 5], 2);
    let dy = random(&[2, 3, 3, 5], 3);
    let rm = random(&[3], 4);
    let rv = Tensor::from_vec([3], vec![0.5, 1.0, 2.0]).unwrap();
    let gamma = Tensor::from_vec([3], vec![1.5, -1.0, 0.5]).unwrap();
    let mut y = Tensor::zeros([2, 3, 3, 5]);
    let stats =
        batchnorm_forward_eval(&mut y, &x, &gamma, &Tensor::zeros([3]), &rm, &rv, 1e-5).unwrap();
    let mut dx = Tensor::full([2, 3, 3, 5], f32::NAN);
    let (mut dg, mut db) = (Tensor::zeros([3]), Tensor::zeros([3]));
    batchnorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gamma, &stats).unwrap();
    let inv = stats.inv_std.as_slice().unwrap();
    let want: Vec<f32> = dy
        .as_slice()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, &g)| {
            let ch = (i / 15) % 3;
            gamma.as_slice().unwrap()[ch] * inv[ch] * g
        })
        .collect();
    assert_close("dx", dx.as_slice().unwrap(), &want, 1e-6);
}

#[test]
fn backward_accumulates_parameter_gradients_and_overwrites_dx() {
    let x = random(&[4, 3], 5);
    let dy = random(&[4, 3], 6);
    let gamma = random(&[3], 7);
    let (_, stats, _, _) = train_unit(&x);
    let (mut dg, mut db) = (Tensor::zeros([3]), Tensor::zeros([3]));
    let mut dx = Tensor::full([4, 3], 7.0);
    batchnorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gamma, &stats).unwrap();
    let (dx1, dg1, db1) = (dx.to_vec(), dg.to_vec(), db.to_vec());
    batchnorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gamma, &stats).unwrap();
    assert_eq!(dx.to_vec(), dx1, "dx is overwritten");
    let twice = |v: &[f32]| v.iter().map(|a| 2.0 * a).collect::<Vec<_>>();
    assert_close("dgamma", dg.as_slice().unwrap(), &twice(&dg1), 1e-6);
    assert_close("dbeta", db.as_slice().unwrap(), &twice(&db1), 1e-6);
    // With batch statistics, dx sums to zero over each feature (d/dx of a mean-free output).
    for f in 0..3 {
        let s: f32 = (0..4).map(|s| dx1[s * 3 + f]).sum();
        assert!(s.abs() < 1e-5, "feature {f}: sum dx = {s}");
    }
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    let x = random(&[6, 5, 7, 9], 8);
    let dy = random(&[6, 5, 7, 9], 9);
    let gamma = random(&[5], 10);
    let beta = random(&[5], 11);
    let run = || {
        let mut y = Tensor::zeros([6, 5, 7, 9]);
        let (mut rm, mut rv) = (Tensor::zeros([5]), Tensor::full([5], 1.0));
        let cfg = BatchNormConfig::default();
        let stats =
            batchnorm_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg).unwrap();
        let mut dx = Tensor::zeros([6, 5, 7, 9]);
        let (mut dg, mut db) = (Tensor::zeros([5]), Tensor::zeros([5]));
        batchnorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gamma, &stats).unwrap();
        let mut ye = Tensor::zeros([6, 5, 7, 9]);
        batchnorm_forward_eval(&mut ye, &x, &gamma, &beta, &rm, &rv, 1e-5).unwrap();
        [y, stats.mean, stats.inv_std, rm, rv, dx, dg, db, ye]
    };
    let one = in_pool(1, run);
    let two = in_pool(2, run);
    for (a, b) in one.iter().zip(&two) {
        let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }
}

#[test]
fn bad_shapes_name_the_op_and_the_shapes() {
    let cfg = BatchNormConfig::default();
    let x = Tensor::zeros([2, 3, 4, 4]);
    let mut y = Tensor::zeros([2, 3, 4, 4]);
    let (g, b) = (Tensor::full([3], 1.0), Tensor::zeros([3]));
    let (mut rm, mut rv) = (Tensor::zeros([3]), Tensor::full([3], 1.0));
    let bad_gamma = Tensor::full([4], 1.0);
    let e = batchnorm_forward_train(&mut y, &x, &bad_gamma, &b, &mut rm, &mut rv, &cfg)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "batchnorm_forward_train: gamma has shape (4,), expected (3,)"
    );
    let e = batchnorm_forward_train(
        &mut y,
        &Tensor::zeros([2, 3, 4]),
        &g,
        &b,
        &mut rm,
        &mut rv,
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "batchnorm_forward_train: x has shape (2, 3, 4), expected (N, C, H, W) or (N, F)"
    );
    let e = batchnorm_forward_train(
        &mut Tensor::zeros([1, 3]),
        &Tensor::zeros([1, 3]),
        &g,
        &b,
        &mut rm,
        &mut rv,
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("batchnorm_forward_train: x has shape (1, 3): 1 value per channel"),
        "{e}"
    );
    let e = batchnorm_forward_eval(&mut Tensor::zeros([2, 3, 4, 5]), &x, &g, &b, &rm, &rv, 1e-5)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "batchnorm_forward_eval: y has shape (2, 3, 4, 5), expected (2, 3, 4, 4)"
    );
    let stats = batchnorm_forward_train(&mut y, &x, &g, &b, &mut rm, &mut rv, &cfg).unwrap();
    let (mut dg, mut db) = (Tensor::zeros([3]), Tensor::zeros([3]));
    let e = batchnorm_backward(
        &mut Tensor::zeros([2, 3, 4, 4]),
        &mut dg,
        &mut db,
        &Tensor::zeros([2, 3, 4, 3]),
        &x,
        &g,
        &stats,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "batchnorm_backward: dy has shape (2, 3, 4, 3), expected (2, 3, 4, 4)"
    );
    let bad = BatchNormConfig {
        momentum: 1.5,
        ..cfg
    };
    let e = batchnorm_forward_train(&mut y, &x, &g, &b, &mut rm, &mut rv, &bad)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "batchnorm_forward_train: momentum 1.5 is outside [0, 1]");
}

/// The fused forwards against the layer pair they replace: batch norm, then
/// `relu_forward_in_place` on its output. Same y, mask, statistics and running averages, to the
/// bit, in training and evaluation, on an odd shape, with a NaN (which must stay NaN) and values
/// that normalise to exactly 0 (a constant channel: not > 0, so masked).
#[test]
fn fused_relu_forwards_equal_batch_norm_then_relu_to_the_bit() {
    let (n, c, h, w) = (3, 5, 7, 3);
    let mut x = random(&[n, c, h, w], 11).to_vec();
    x[17] = f32::NAN;
    for s in 0..n {
        // Channel 2 is constant: its normalised values are beta exactly.
        x[(s * c + 2) * h * w..][..h * w].fill(0.75);
    }
    let x = Tensor::from_vec([n, c, h, w], x).unwrap();
    let gamma = random(&[c], 12);
    let mut beta = random(&[c], 13).to_vec();
    beta[2] = 0.0;
    let beta = Tensor::from_vec([c], beta).unwrap();
    let cfg = BatchNormConfig::default();
    let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let running = || {
        let rv = random(&[c], 15).to_vec().iter().map(|v| v.abs()).collect();
        (random(&[c], 14), Tensor::from_vec([c], rv).unwrap())
    };

    // Training.
    let (mut rm, mut rv) = running();
    let mut y = Tensor::zeros([n, c, h, w]);
    let stats = batchnorm_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg).unwrap();
    let mask = relu_forward_in_place(&mut y).unwrap();
    let (mut frm, mut frv) = running();
    let mut fy = Tensor::zeros([n, c, h, w]);
    let (fstats, fmask) =
        batchnorm_relu_forward_train(&mut fy, &x, &gamma, &beta, &mut frm, &mut frv, &cfg).unwrap();
    assert_eq!(bits(&fy), bits(&y));
    assert_eq!(fmask, mask);
    // (The NaN makes its channel's mean NaN: compared as bits.)
    let stat_bits = |s: &BatchNormStats| (bits(&s.mean), bits(&s.inv_std), s.source);
    assert_eq!(stat_bits(&fstats), stat_bits(&stats));
    assert_eq!((bits(&frm), bits(&frv)), (bits(&rm), bits(&rv)));
    assert!(fy.to_vec()[17].is_nan());
    assert!(
        matches!(&fmask, ReluMask::Bytes { keep, .. } if keep[(2 * h * w)..][..h * w].iter().all(|&k| k == 0))
    );

    // Recomputed from the statistics, without the mask.
    let mut again = Tensor::zeros([n, c, h, w]);
    batchnorm_relu_apply(&mut again, &x, &gamma, &beta, &fstats).unwrap();
    assert_eq!(bits(&again), bits(&fy));

    // Evaluation.
    let mut y = Tensor::zeros([n, c, h, w]);
    let stats = batchnorm_forward_eval(&mut y, &x, &gamma, &beta, &rm, &rv, cfg.eps).unwrap();
    let mask = relu_forward_in_place(&mut y).unwrap();
    let mut fy = Tensor::zeros([n, c, h, w]);
    let (fstats, fmask) =
        batchnorm_relu_forward_eval(&mut fy, &x, &gamma, &beta, &rm, &rv, cfg.eps).unwrap();
    assert_eq!(bits(&fy), bits(&y));
    assert_eq!(fmask, mask);
    assert_eq!(stat_bits(&fstats), stat_bits(&stats));
}

/// The fused backward against the pair it replaces: `relu_backward_in_place` on dy, then
/// [`batchnorm_backward`]. Same dx, dgamma and dbeta, to the bit, with batch and running
/// statistics, on an odd NCHW shape and on (N, F) rows, on one and two threads, with a NaN in dy
/// where the ReLU let its input through (it must reach dx) and one where it did not (it must
/// not).
#[test]
fn fused_relu_backward_equals_relu_then_batch_norm_backward_to_the_bit() {
    let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for dims in [&[3, 5, 7, 3][..], &[9, 6][..]] {
        let c = dims[1];
        let x = random(dims, 21);
        let (gamma, beta) = (random(&[c], 22), random(&[c], 23));
        let cfg = BatchNormConfig::default();
        let (mut rm, mut rv) = (Tensor::zeros([c]), Tensor::full([c], 1.0));
        let mut a = Tensor::zeros(dims);
        let (batch, mask) =
            batchnorm_relu_forward_train(&mut a, &x, &gamma, &beta, &mut rm, &mut rv, &cfg)
                .unwrap();
        let (running, _) =
            batchnorm_relu_forward_eval(&mut a, &x, &gamma, &beta, &rm, &rv, cfg.eps).unwrap();
        let ReluMask::Bytes { keep, .. } = &mask else {
            panic!("a CPU forward keeps a byte mask")
        };
        let (open, shut) = (
            keep.iter().position(|&k| k == 1).unwrap(),
            keep.iter().position(|&k| k == 0).unwrap(),
        );
        let mut dy = random(dims, 24).to_vec();
        dy[open] = f32::NAN;
        dy[shut] = f32::NAN;
        let dy = Tensor::from_vec(dims, dy).unwrap();
        for stats in [&batch, &running] {
            let run = |fused: bool| {
                let mut dx = Tensor::full(dims, 7.0);
                let (mut dg, mut db) = (Tensor::full([c], 0.5), Tensor::full([c], -0.5));
                if fused {
                    let (dx, dg, db) = (&mut dx, &mut dg, &mut db);
                    batchnorm_relu_backward(dx, dg, db, &dy, &mask, &x, &gamma, stats).unwrap();
                } else {
                    let mut g = dy.clone();
                    relu_backward_in_place(&mut g, &mask).unwrap();
                    batchnorm_backward(&mut dx, &mut dg, &mut db, &g, &x, &gamma, stats).unwrap();
                }
                [bits(&dx), bits(&dg), bits(&db)]
            };
            let want = run(false);
            assert_eq!(
                in_pool(1, || run(true)),
                want,
                "{dims:?}, {:?}",
                stats.source
            );
            assert_eq!(
                in_pool(2, || run(true)),
                want,
                "{dims:?}, {:?}",
                stats.source
            );
        }
    }
}

#[test]
fn fused_relu_backward_refuses_a_mask_of_another_shape() {
    let x = random(&[2, 3, 4, 4], 25);
    let (g, b) = (Tensor::full([3], 1.0), Tensor::zeros([3]));
    let (mut rm, mut rv) = (Tensor::zeros([3]), Tensor::full([3], 1.0));
    let cfg = BatchNormConfig::default();
    let mut y = Tensor::zeros([2, 3, 4, 4]);
    let stats = batchnorm_forward_train(&mut y, &x, &g, &b, &mut rm, &mut rv, &cfg).unwrap();
    let mut other = Tensor::zeros([2, 3, 4, 5]);
    let mask = relu_forward_in_place(&mut other).unwrap();
    let (mut dg, mut db) = (Tensor::zeros([3]), Tensor::zeros([3]));
    let mut dx = Tensor::zeros([2, 3, 4, 4]);
    let dy = Tensor::zeros([2, 3, 4, 4]);
    let e = batchnorm_relu_backward(&mut dx, &mut dg, &mut db, &dy, &mask, &x, &g, &stats)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "batchnorm_relu_backward: x has shape (2, 3, 4, 4), expected (2, 3, 4, 5)"
    );
    // A byte mask whose bytes do not match its own shape (the enum is public).
    let short = ReluMask::Bytes {
        shape: x.shape().clone(),
        keep: vec![1; 10],
    };
    let e = batchnorm_relu_backward(&mut dx, &mut dg, &mut db, &dy, &short, &x, &g, &stats)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "batchnorm_relu_backward: relu_mask holds 10 bytes for a shape of 96 values"
    );
}

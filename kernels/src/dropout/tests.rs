use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;

const KEY: MaskKey = MaskKey {
    seed: 11,
    step: 5,
    layer: 2,
};

fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn forward(x: &Tensor, keep: f32, key: MaskKey) -> Tensor {
    let mut y = Tensor::zeros(x.shape().clone());
    dropout_forward(&mut y, x, keep, key).unwrap();
    y
}

/// Each value is dropped independently with probability 1 - k, so over n values the dropped
/// fraction has standard deviation sqrt(k (1 - k) / n); we allow 5 of them.
#[test]
fn drops_about_one_minus_keep_and_scales_the_rest() {
    let n = 1_000_000;
    for keep in [0.5f32, 0.9] {
        let y = forward(&Tensor::full([n], 1.0), keep, KEY);
        let v = y.as_slice().unwrap();
        let dropped = v.iter().filter(|&&a| a == 0.0).count() as f64 / n as f64;
        let sigma = (keep as f64 * (1.0 - keep as f64) / n as f64).sqrt();
        assert!(
            (dropped - (1.0 - keep as f64)).abs() < 5.0 * sigma,
            "keep {keep}: dropped {dropped}"
        );
        assert!(v.iter().all(|&a| a == 0.0 || a == 1.0 / keep));
    }
}

/// E[y_i] = x_i: the mean of y over many values matches the mean of x within 5 standard
/// deviations of the mean, where Var(y_i) = x_i^2 (1 - k) / k.
#[test]
fn keeps_the_mean_activation() {
    let n = 1_000_000;
    let keep = 0.5f32;
    let x = Tensor::uniform([n], 0.0, 2.0, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let y = forward(&x, keep, KEY);
    let xs = x.as_slice().unwrap();
    let mean_x = xs.iter().map(|&a| a as f64).sum::<f64>() / n as f64;
    let mean_y = y.as_slice().unwrap().iter().map(|&a| a as f64).sum::<f64>() / n as f64;
    let mean_sq = xs.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / n as f64;
    let sigma = (mean_sq * (1.0 - keep as f64) / keep as f64 / n as f64).sqrt();
    assert!(
        (mean_y - mean_x).abs() < 5.0 * sigma,
        "mean x {mean_x}, mean y {mean_y}, sigma {sigma}"
    );
}

#[test]
fn keep_one_is_the_identity() {
    let x = Tensor::uniform([3, 7], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    assert_eq!(forward(&x, 1.0, KEY), x);
    let mut dx = Tensor::zeros([3, 7]);
    dropout_backward(&mut dx, &x, 1.0, KEY).unwrap();
    assert_eq!(dx, x);
}

/// The mask is the function of the key that the module doc states, and backward applies it again.
#[test]
fn mask_follows_the_key_and_backward_reuses_it() {
    let keep = 0.6f32;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = Tensor::uniform([5, 13], 0.5, 1.5, &mut rng).unwrap();
    let dy = Tensor::uniform([5, 13], 0.5, 1.5, &mut rng).unwrap();
    let y = forward(&x, keep, KEY);
    let mut dx = Tensor::zeros([5, 13]);
    dropout_backward(&mut dx, &dy, keep, KEY).unwrap();
    let (xs, ys, dys, dxs) = (
        x.as_slice().unwrap(),
        y.as_slice().unwrap(),
        dy.as_slice().unwrap(),
        dx.as_slice().unwrap(),
    );
    for i in 0..xs.len() {
        let kept = KEY.uniform(i as u64) < keep;
        let s = if kept { 1.0 / keep } else { 0.0 };
        assert_eq!(ys[i], xs[i] * s, "y at {i}");
        assert_eq!(dxs[i], dys[i] * s, "dx at {i}");
    }
    // Another step draws another mask.
    assert_ne!(forward(&x, keep, MaskKey { step: 6, ..KEY }), y);
}

#[test]
fn bit_identical_on_one_and_two_threads_and_across_calls() {
    let x = Tensor::uniform([100_003], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
    let one = on_threads(1, || forward(&x, 0.7, KEY));
    let two = on_threads(2, || forward(&x, 0.7, KEY));
    assert_eq!(one, two);
    assert_eq!(forward(&x, 0.7, KEY), one);
}

#[test]
fn bad_arguments_are_errors() {
    let x = Tensor::zeros([2, 3]);
    let mut y = Tensor::zeros([2, 3]);
    for keep in [0.0f32, -0.1, 1.5, f32::NAN] {
        let e = dropout_forward(&mut y, &x, keep, KEY).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("dropout_forward: keep probability"),
            "{e}"
        );
        assert!(dropout_backward(&mut y, &x, keep, KEY).is_err());
    }
    let mut wrong = Tensor::zeros([3, 2]);
    let e = dropout_forward(&mut wrong, &x, 0.5, KEY).unwrap_err();
    assert_eq!(
        e.to_string(),
        "dropout_forward: y has shape (3, 2), expected (2, 3)"
    );
    assert!(dropout_backward(&mut wrong, &x, 0.5, KEY).is_err());
}

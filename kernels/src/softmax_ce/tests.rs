use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;

fn forward(logits: &Tensor, labels: &[u32]) -> (f32, Tensor) {
    let mut probs = Tensor::zeros(logits.shape().clone());
    let loss = softmax_ce_forward(&mut probs, logits, labels).unwrap();
    (loss, probs)
}

fn assert_close(got: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(got.len(), expected.len());
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!((g as f64 - e).abs() <= tol, "at {i}: {g} vs {e}");
    }
}

/// Tolerance for f32 results of f64 computations: a few f32 rounding steps on values near 1.
const F32_TOL: f64 = 1e-6;

#[test]
fn known_answer() {
    let logits = Tensor::from_vec([2, 3], vec![1.0, 2.0, 3.0, 1.0, 1.0, 1.0]).unwrap();
    let (loss, probs) = forward(&logits, &[2, 0]);
    // Row 0: log(e + e^2 + e^3) - 3; row 1: log 3.
    let z = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let expected_loss = ((z - 3.0) + 3f64.ln()) / 2.0;
    assert!((loss as f64 - expected_loss).abs() < F32_TOL, "{loss}");
    let third = 1.0 / 3.0;
    let row0 = [1.0 - z, 2.0 - z, 3.0 - z].map(f64::exp);
    let expected_probs = [row0[0], row0[1], row0[2], third, third, third];
    assert_close(probs.as_slice().unwrap(), &expected_probs, F32_TOL);

    let mut dlogits = Tensor::zeros([2, 3]);
    softmax_ce_backward(&mut dlogits, &probs, &[2, 0]).unwrap();
    let expected_grad = [
        row0[0] / 2.0,
        row0[1] / 2.0,
        (row0[2] - 1.0) / 2.0,
        (third - 1.0) / 2.0,
        third / 2.0,
        third / 2.0,
    ];
    assert_close(dlogits.as_slice().unwrap(), &expected_grad, F32_TOL);
}

/// exp(1000) overflows f32 and f64; the shifted form stays finite.
#[test]
fn large_logits_are_stable() {
    let logits = Tensor::from_vec([2, 2], vec![1000.0, 0.0, 1000.0, 0.0]).unwrap();
    let (loss, probs) = forward(&logits, &[0, 1]);
    assert!((loss - 500.0).abs() < 1e-3, "{loss}");
    assert_eq!(probs.as_slice().unwrap(), &[1.0, 0.0, 1.0, 0.0]);
}

/// Central differences of the mean loss in f64 against the analytic gradient.
#[test]
fn gradient_matches_finite_differences() {
    let (n, classes) = (3, 5);
    let logits =
        Tensor::uniform([n, classes], -2.0, 2.0, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    let labels = [4u32, 0, 2];
    let (_, probs) = forward(&logits, &labels);
    let mut dlogits = Tensor::zeros([n, classes]);
    softmax_ce_backward(&mut dlogits, &probs, &labels).unwrap();
    let eps = 1e-2f32;
    let z = logits.to_vec();
    for i in 0..z.len() {
        let loss_at = |v: f32| {
            let mut zz = z.clone();
            zz[i] = v;
            forward(&Tensor::from_vec([n, classes], zz).unwrap(), &labels).0 as f64
        };
        let numeric = (loss_at(z[i] + eps) - loss_at(z[i] - eps)) / (2.0 * eps as f64);
        let analytic = dlogits.as_slice().unwrap()[i] as f64;
        // f32 losses near 1 differenced over 2e-2: rounding error about 1e-7 / 2e-2 = 5e-6.
        assert!(
            (numeric - analytic).abs() < 1e-4,
            "at {i}: {analytic} vs {numeric}"
        );
    }
}

#[test]
fn bit_identical_on_one_and_two_threads() {
    let (n, classes) = (1001, 100);
    let logits =
        Tensor::uniform([n, classes], -5.0, 5.0, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 37) % classes as u32).collect();
    let run = || {
        let (loss, probs) = forward(&logits, &labels);
        let mut d = Tensor::zeros([n, classes]);
        softmax_ce_backward(&mut d, &probs, &labels).unwrap();
        (loss.to_bits(), probs, d)
    };
    let pool = |k| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run);
    let two = pool(2).install(run);
    assert_eq!(one, two);
    assert_eq!(run(), one);
}

#[test]
fn bad_arguments_are_errors() {
    let logits = Tensor::zeros([2, 3]);
    let mut probs = Tensor::zeros([2, 3]);
    let e = softmax_ce_forward(&mut probs, &logits, &[0, 5]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "softmax_ce_forward: label 5 at index 1 is out of range for 3 classes"
    );
    let e = softmax_ce_backward(&mut probs, &logits, &[3, 0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "softmax_ce_backward: label 3 at index 0 is out of range for 3 classes"
    );
    let e = softmax_ce_forward(&mut probs, &logits, &[0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "softmax_ce_forward: 1 labels for logits of shape (2, 3)"
    );
    let e = softmax_ce_forward(&mut probs, &Tensor::zeros([6]), &[0]).unwrap_err();
    assert!(e.to_string().contains("logits have shape (6,)"), "{e}");
    let mut empty = Tensor::zeros([0, 3]);
    assert!(softmax_ce_forward(&mut empty, &Tensor::zeros([0, 3]), &[]).is_err());
    let mut wrong = Tensor::zeros([3, 2]);
    let e = softmax_ce_forward(&mut wrong, &logits, &[0, 1]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "softmax_ce_forward: probs has shape (3, 2), expected (2, 3)"
    );
    assert!(softmax_ce_backward(&mut wrong, &logits, &[0, 1]).is_err());
}

#[test]
fn cross_entropy_is_the_softmax_loss_without_overflow() {
    assert!((cross_entropy(&[0.0; 100], 7) - 100f64.ln()).abs() < 1e-12);
    let direct = |l: &[f32], k: usize| {
        let s: f64 = l.iter().map(|&v| f64::from(v).exp()).sum();
        -(f64::from(l[k]).exp() / s).ln()
    };
    let logits = [1.5, -2.0, 0.25, 3.0];
    for k in 0..4 {
        assert!((cross_entropy(&logits, k) - direct(&logits, k)).abs() < 1e-12);
    }
    // exp(1000) overflows f64; shifted by the largest logit it does not.
    assert_eq!(cross_entropy(&[1000.0, 0.0], 1), 1000.0);
    assert!(cross_entropy(&[1000.0, 0.0], 0).abs() < 1e-300);
    // The rows' losses are what the forward pass sums, to the bit.
    let logits = Tensor::from_vec([2, 4], vec![1.5, -2.0, 0.25, 3.0, 0.5, 0.5, -1.0, 2.0]).unwrap();
    let mut probs = Tensor::zeros([2, 4]);
    let x = logits.as_slice().unwrap();
    let summed = super::cpu::forward(probs.as_mut_slice().unwrap(), x, &[3, 1], 4);
    assert_eq!(
        summed,
        cross_entropy(&x[..4], 3) + cross_entropy(&x[4..], 1)
    );
}

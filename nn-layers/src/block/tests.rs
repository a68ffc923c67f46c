use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;
use crate::gradcheck::{compare_where_smooth, numeric_grad_smooth, probe_loss, Tolerance};
use kernels::batchnorm::BatchNormConfig;

/// A whole residual block chains fourteen layers in f32. The probe loss (72 terms of order 1)
/// carries about 1e-5 of rounding, which central differences with EPS = 1e-3 turn into about 5e-3
/// of noise on each numeric gradient, hence the absolute tolerance; and batch norm over a batch of
/// two is strongly curved, hence the small EPS and the relative tolerance. A wrong formula is off
/// by order 1 (the gradients here are of order 1).
const BLOCK_TOL: Tolerance = Tolerance {
    atol: 1e-2,
    rtol: 2e-2,
};
/// How closely the estimates at EPS and EPS / 2 must agree for a coordinate to count as smooth:
/// tighter than BLOCK_TOL, so that a coordinate with a kink inside the step is left out rather
/// than compared with a numeric gradient that is off by a few percent.
const SMOOTH_TOL: Tolerance = Tolerance {
    atol: 5e-3,
    rtol: 5e-3,
};
const EPS: f32 = 1e-3;
/// At least this fraction of coordinates must be smooth within EPS for a check to count.
const MIN_SMOOTH: f64 = 0.9;
const SEED: u64 = 11;
const KEEP: f32 = 0.8;
const STEP: u64 = 3;

/// N=2, C=2 -> K=3 on a 5x4 map, DropBlock 3 at keep 0.8 so its mask is active. Small, so that
/// few ReLU kinks lie near any point.
fn setup() -> (ResidualBlock, Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let block = ResidualBlock::new(2, 3, BatchNormConfig::default(), 3, KEEP, 0, &mut rng).unwrap();
    let x = Tensor::uniform([2, 2, 5, 4], -1.0, 1.0, &mut rng).unwrap();
    let r = Tensor::uniform([2, 3, 3, 2], -1.0, 1.0, &mut rng).unwrap();
    (block, x, r)
}

fn loss(block: &ResidualBlock, x: &Tensor, r: &Tensor) -> f64 {
    let mut b = block.clone();
    let (y, _) = b.forward(x.clone(), ForwardCtx::train(SEED, STEP)).unwrap();
    probe_loss(y.as_slice().unwrap(), r.as_slice().unwrap())
}

/// The block with parameter number `index` (in visiting order) set to `value`.
fn with_param(block: &ResidualBlock, index: usize, value: &[f32]) -> ResidualBlock {
    let mut b = block.clone();
    let mut i = 0;
    b.visit_params("", &mut |_, p| {
        if i == index {
            p.value = Tensor::from_vec(p.value.shape().clone(), value.to_vec()).unwrap();
        }
        i += 1;
    });
    b
}

#[test]
fn residual_block_gradients_match_finite_differences() {
    let (block, x, r) = setup();
    let mut analytic = block.clone();
    let (y, cache) = analytic
        .forward(x.clone(), ForwardCtx::train(SEED, STEP))
        .unwrap();
    assert_eq!(y.dims(), r.dims());
    let dx = analytic.backward(&r, cache).unwrap();

    let numeric = numeric_grad_smooth(x.as_slice().unwrap(), EPS, SMOOTH_TOL, |v| {
        let xv = Tensor::from_vec(x.shape().clone(), v.to_vec()).unwrap();
        loss(&block, &xv, &r)
    });
    compare_where_smooth(
        "ResidualBlock dx",
        dx.as_slice().unwrap(),
        &numeric,
        BLOCK_TOL,
        MIN_SMOOTH,
    )
    .unwrap();

    let mut grads = Vec::new();
    analytic.visit_params("", &mut |name, p| {
        grads.push((name.to_string(), p.value.to_vec(), p.grad.to_vec()));
    });
    assert_eq!(
        grads.len(),
        12,
        "4 batch norms with weight and bias, 4 convolutions"
    );
    // A small tensor (a batch norm's two scales) may have no smooth coordinate at all, so the
    // share of checkable coordinates is required over all parameters together.
    let (mut checked, mut total) = (0, 0);
    for (index, (name, value, grad)) in grads.iter().enumerate() {
        let numeric = numeric_grad_smooth(value, EPS, SMOOTH_TOL, |v| {
            loss(&with_param(&block, index, v), &x, &r)
        });
        checked += compare_where_smooth(name, grad, &numeric, BLOCK_TOL, 0.0).unwrap();
        total += value.len();
    }
    assert!(
        checked as f64 >= MIN_SMOOTH * total as f64,
        "only {checked} of {total} parameter gradients were smooth enough to check"
    );
}

#[test]
fn parameter_names_follow_the_pytorch_module() {
    let (mut block, _, _) = setup();
    let mut names = Vec::new();
    block.visit_params("blocks.0", &mut |n, _| names.push(n.to_string()));
    block.visit_buffers("blocks.0", &mut |n, _| names.push(n.to_string()));
    let expected_params = [
        "bn1.weight",
        "bn1.bias",
        "conv1.weight",
        "bn2.weight",
        "bn2.bias",
        "conv2.weight",
    ];
    let mut expected: Vec<String> = Vec::new();
    for cb in ["conv_block1", "conv_block2"] {
        expected.extend(expected_params.iter().map(|p| format!("blocks.0.{cb}.{p}")));
    }
    for cb in ["conv_block1", "conv_block2"] {
        for bn in ["bn1", "bn2"] {
            for b in ["running_mean", "running_var"] {
                expected.push(format!("blocks.0.{cb}.{bn}.{b}"));
            }
        }
    }
    assert_eq!(names, expected);
}

#[test]
fn same_seed_gives_bit_identical_results_on_one_and_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let mut block =
                ResidualBlock::new(3, 8, BatchNormConfig::default(), 5, 0.9, 1, &mut rng).unwrap();
            let x = Tensor::uniform([4, 3, 16, 16], -1.0, 1.0, &mut rng).unwrap();
            let (y, cache) = block.forward(x, ForwardCtx::train(7, 2)).unwrap();
            let dy = Tensor::uniform(y.shape().clone(), -1.0, 1.0, &mut rng).unwrap();
            let dx = block.backward(&dy, cache).unwrap();
            let mut grads = Vec::new();
            block.visit_params("", &mut |_, p| grads.push(p.grad.to_vec()));
            (y, dx, grads)
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(1), "a second run with the same seed differs");
}

#[test]
fn eval_mode_is_deterministic_and_skips_dropblock() {
    let (mut block, x, _) = setup();
    let eval = |seed, step| ForwardCtx {
        mode: Mode::Eval,
        ..ForwardCtx::train(seed, step)
    };
    let (a, _) = block.forward(x.clone(), eval(1, 1)).unwrap();
    let (b, _) = block.forward(x.clone(), eval(2, 99)).unwrap();
    assert_eq!(a, b, "eval output depends on the mask key");
}

#[test]
fn wrong_input_channels_is_an_error() {
    let (mut block, _, _) = setup();
    let err = block
        .forward(Tensor::zeros([2, 5, 7, 5]), ForwardCtx::train(0, 0))
        .unwrap_err();
    assert!(err.to_string().contains("5"), "{err}");
}

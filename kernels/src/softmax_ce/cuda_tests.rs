//! Softmax cross-entropy and the loss tally: the CPU functions against the CUDA kernels of
//! softmax_ce.cu, on the emulated device (`emu_*`) and on a GPU (`gpu_*`, ignored here;
//! scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::{cuda, softmax_ce_backward, softmax_ce_forward};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, Tol, EXACT};
use crate::cuda::TensorBackend;

/// exp and log in double round differently from Rust's libm in the last place; probs are
/// rounded to f32 once afterwards, so they agree to about one f32 ulp.
const SOFTMAX_TOL: Tol = Tol {
    atol: 1e-8,
    rtol: 2e-7,
};

on_emu_and_gpu!(
    emu_softmax_ce_matches_cpu,
    gpu_softmax_ce_matches_cpu,
    softmax_ce_matches_cpu
);

fn softmax_ce_matches_cpu<B: Backend>(dev: &B) {
    // Odd shapes and the seed's classifier: 250 rows of 100 classes.
    for (s, (rows, classes)) in [(1usize, 1usize), (7, 13), (250, 100)]
        .into_iter()
        .enumerate()
    {
        let logits = uniform(80 + s as u64, rows * classes, -8.0, 8.0);
        let labels: Vec<u32> = (0..rows).map(|r| ((r * 7 + s) % classes) as u32).collect();
        let lt = Tensor::from_vec([rows, classes], logits.clone()).unwrap();
        let mut probs = Tensor::zeros([rows, classes]);
        let loss = softmax_ce_forward(&mut probs, &lt, &labels).unwrap();
        let mut dlogits = Tensor::zeros([rows, classes]);
        softmax_ce_backward(&mut dlogits, &probs, &labels).unwrap();

        let (lb, yb) = (dev.upload(&logits).unwrap(), dev.upload(&labels).unwrap());
        let mut pb = dev.upload(&vec![f32::NAN; rows * classes]).unwrap();
        let mut rl = dev.alloc(rows).unwrap();
        cuda::softmax_ce_forward(dev, &mut pb, &mut rl, &lb, &yb, classes).unwrap();
        let gpu_loss = cuda::mean_loss(dev, &rl).unwrap();
        assert_close(
            "softmax probs",
            &dev.download(&pb).unwrap(),
            probs.as_slice().unwrap(),
            SOFTMAX_TOL,
        );
        assert_close("softmax loss", &[gpu_loss], &[loss], SOFTMAX_TOL);
        // Backward from the CPU's probs, so only the backward's arithmetic is compared.
        let mut db = dev.upload(&vec![f32::NAN; rows * classes]).unwrap();
        cuda::softmax_ce_backward(
            dev,
            &mut db,
            &dev.upload(probs.as_slice().unwrap()).unwrap(),
            &yb,
            classes,
        )
        .unwrap();
        assert_close(
            "softmax dlogits",
            &dev.download(&db).unwrap(),
            dlogits.as_slice().unwrap(),
            EXACT,
        );
    }
    let (lb, yb) = (
        dev.upload(&[0.0f32; 6]).unwrap(),
        dev.upload(&[1u32, 3]).unwrap(),
    );
    let (mut pb, mut rl) = (dev.alloc(6).unwrap(), dev.alloc(2).unwrap());
    cuda::softmax_ce_forward(dev, &mut pb, &mut rl, &lb, &yb, 3).unwrap();
    let e = cuda::mean_loss(dev, &rl).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda softmax_ce_forward: label of row 1 is not below the number of classes"
    );
}

on_emu_and_gpu!(
    emu_softmax_ce_tally_matches_cpu,
    gpu_softmax_ce_tally_matches_cpu,
    softmax_ce_tally_matches_cpu
);

/// Three minibatches through `softmax_ce_forward_tallied` on the CPU and on `dev`'s device: the
/// same last loss and running loss sum (to softmax rounding), the same correct counts exactly.
fn softmax_ce_tally_matches_cpu<B: TensorBackend>(backend: &B) {
    let device = backend.device();
    use crate::softmax_ce::{softmax_ce_forward_tallied, LossTally};
    for (rows, classes) in [(7usize, 13usize), (250, 100)] {
        // Sums carried in from a resumed run's checkpoint.
        let (start_loss, start_correct) = (12.5, 40);
        let mut cpu = LossTally::new(tensor_core::Device::Cpu, start_loss, start_correct).unwrap();
        let mut dev = LossTally::new(device, start_loss, start_correct).unwrap();
        for batch in 0..3u64 {
            let mut logits = uniform(100 + batch, rows * classes, -4.0, 4.0);
            let labels: Vec<u32> = (0..rows)
                .map(|r| ((r * 5 + batch as usize) % classes) as u32)
                .collect();
            // Every third row's label gets the largest logit, so the counts are not all 0.
            for r in (0..rows).step_by(3) {
                logits[r * classes + labels[r] as usize] = 9.0;
            }
            let lt = Tensor::from_vec([rows, classes], logits).unwrap();
            let mut probs = Tensor::zeros([rows, classes]);
            softmax_ce_forward_tallied(&mut probs, &lt, &labels, &mut cpu).unwrap();
            let dl = crate::cuda::to_device(&lt, device).unwrap();
            let mut dp = crate::cuda::zeros_on([rows, classes], device).unwrap();
            softmax_ce_forward_tallied(&mut dp, &dl, &labels, &mut dev).unwrap();
        }
        let (c, g) = (cpu.read().unwrap(), dev.read().unwrap());
        let what = format!("tally of {rows} x {classes}");
        assert_eq!(
            (g.last_correct, g.correct),
            (c.last_correct, c.correct),
            "{what}"
        );
        assert!(
            c.correct >= start_correct + 3 * (rows as u64 / 3),
            "{what}: {c:?}"
        );
        assert_close(&what, &[g.last_loss], &[c.last_loss], SOFTMAX_TOL);
        assert!(
            (g.loss_sum - c.loss_sum).abs() <= SOFTMAX_TOL.rtol as f64 * c.loss_sum,
            "{what}: gpu {g:?}, cpu {c:?}"
        );
    }
    // The tally must live where the logits are.
    let mut cpu = LossTally::new(tensor_core::Device::Cpu, 0.0, 0).unwrap();
    let dl = crate::cuda::zeros_on([2, 3], device).unwrap();
    let mut dp = crate::cuda::zeros_on([2, 3], device).unwrap();
    assert!(softmax_ce_forward_tallied(&mut dp, &dl, &[0, 1], &mut cpu).is_err());
}

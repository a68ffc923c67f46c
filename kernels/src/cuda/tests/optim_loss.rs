//! Adam, SGD, the global-norm reduction and clipping, and softmax cross-entropy: the CPU functions
//! against the emulated kernels.

use super::super::emu::Emu;
use super::super::gpu::Gpu;
use super::super::launch::Backend;
use super::super::ops;
use super::{assert_close, uniform, Tol, EXACT};
use crate::adam::{adam_update, Adam};
use crate::grad_norm::{scale_in_place, sum_of_squares};
use crate::sgd::{sgd_update, Sgd};
use crate::softmax_ce::{softmax_ce_backward, softmax_ce_forward};
use tensor_core::Tensor;

/// The same float operations as the CPU, but a GPU may contract a * b + c into one rounding
/// (NVRTC's default --fmad=true): a few ulps.
const FMA_TOL: Tol = Tol {
    atol: 1e-7,
    rtol: 1e-6,
};

/// Sums in f64 in a different order than the CPU's (blocks and warps, not chunks).
const F64_SUM_RTOL: f64 = 1e-12;

/// exp and log in double round differently from Rust's libm in the last place; probs are
/// rounded to f32 once afterwards, so they agree to about one f32 ulp.
const SOFTMAX_TOL: Tol = Tol {
    atol: 1e-8,
    rtol: 2e-7,
};

#[test]
fn emu_adam_matches_cpu() {
    adam_matches_cpu(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_adam_matches_cpu() {
    adam_matches_cpu(Gpu::shared(0).expect("GPU 0"));
}

fn adam_matches_cpu<B: Backend>(dev: &B) {
    // An odd length and a real one: the seed's conv weight 128 x 128 x 3 x 3.
    for n in [1001usize, 128 * 128 * 9] {
        let cfg = Adam::default();
        let w0 = uniform(60, n, -0.5, 0.5);
        let (mut w, mut m, mut v) = (
            Tensor::from_vec([n], w0.clone()).unwrap(),
            Tensor::zeros([n]),
            Tensor::zeros([n]),
        );
        let (mut wb, mut mb, mut vb) = (
            dev.upload(&w0).unwrap(),
            dev.alloc(n).unwrap(),
            dev.alloc(n).unwrap(),
        );
        for t in 1..=3u64 {
            let g = uniform(60 + t, n, -1.0, 1.0);
            adam_update(
                &mut w,
                &mut m,
                &mut v,
                &Tensor::from_vec([n], g.clone()).unwrap(),
                &cfg,
                t,
            )
            .unwrap();
            ops::adam_update(
                dev,
                &mut wb,
                &mut mb,
                &mut vb,
                &dev.upload(&g).unwrap(),
                &cfg,
                t,
            )
            .unwrap();
        }
        assert_close(
            "adam m",
            &dev.download(&mb).unwrap(),
            m.as_slice().unwrap(),
            FMA_TOL,
        );
        assert_close(
            "adam v",
            &dev.download(&vb).unwrap(),
            v.as_slice().unwrap(),
            FMA_TOL,
        );
        assert_close(
            "adam w",
            &dev.download(&wb).unwrap(),
            w.as_slice().unwrap(),
            FMA_TOL,
        );
    }
    let mut b = dev.alloc(3).unwrap();
    let e = ops::adam_update(
        dev,
        &mut b,
        &mut dev.alloc(3).unwrap(),
        &mut dev.alloc(2).unwrap(),
        &dev.alloc(3).unwrap(),
        &Adam::default(),
        1,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda adam_update: v holds 2 values, expected 3"
    );
}

#[test]
fn emu_sgd_matches_cpu() {
    sgd_matches_cpu(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_sgd_matches_cpu() {
    sgd_matches_cpu(Gpu::shared(0).expect("GPU 0"));
}

fn sgd_matches_cpu<B: Backend>(dev: &B) {
    let classical = Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
    };
    let configs = [
        classical,
        Sgd {
            nesterov: true,
            ..classical
        },
        Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            ..classical
        },
    ];
    // An odd length and a real one: the seed's conv weight 128 x 128 x 3 x 3.
    for (c, cfg) in configs.iter().enumerate() {
        for n in [1001usize, 128 * 128 * 9] {
            let w0 = uniform(90 + c as u64, n, -0.5, 0.5);
            let (mut w, mut buf) = (
                Tensor::from_vec([n], w0.clone()).unwrap(),
                Tensor::zeros([n]),
            );
            let (mut wb, mut bb) = (dev.upload(&w0).unwrap(), dev.alloc(n).unwrap());
            for t in 1..=3u64 {
                let g = uniform(90 + 10 * t + c as u64, n, -1.0, 1.0);
                sgd_update(
                    &mut w,
                    &mut buf,
                    &Tensor::from_vec([n], g.clone()).unwrap(),
                    cfg,
                )
                .unwrap();
                ops::sgd_update(dev, &mut wb, &mut bb, &dev.upload(&g).unwrap(), cfg).unwrap();
            }
            let what = format!("sgd {cfg:?}, n {n}");
            // sgd.cu rounds every operation as the CPU does (no contraction): bit for bit.
            let buf_gpu = dev.download(&bb).unwrap();
            assert_close(&what, &buf_gpu, buf.as_slice().unwrap(), EXACT);
            let w_gpu = dev.download(&wb).unwrap();
            assert_close(&what, &w_gpu, w.as_slice().unwrap(), EXACT);
        }
    }
    let mut b = dev.alloc(3).unwrap();
    let e = ops::sgd_update(
        dev,
        &mut b,
        &mut dev.alloc(2).unwrap(),
        &dev.alloc(3).unwrap(),
        &classical,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda sgd_update: buf holds 2 values, expected 3"
    );
}

/// `sgd_update` on tensors of the emulated device dispatches to the kernel, and refuses a mix
/// of devices.
#[test]
fn emu_sgd_update_dispatches_on_the_tensors_device() {
    let cfg = Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
    };
    let n = 777;
    let (w0, g) = (uniform(120, n, -1.0, 1.0), uniform(121, n, -1.0, 1.0));
    let (mut w, mut buf) = (Tensor::from_vec([n], w0).unwrap(), Tensor::zeros([n]));
    let g = Tensor::from_vec([n], g).unwrap();
    let on_emu = |t: &Tensor| crate::cuda::to_device(t, tensor_core::Device::CudaEmu).unwrap();
    let (mut we, mut be, ge) = (on_emu(&w), on_emu(&buf), on_emu(&g));
    sgd_update(&mut w, &mut buf, &g, &cfg).unwrap();
    sgd_update(&mut we, &mut be, &ge, &cfg).unwrap();
    assert_eq!(we.device(), tensor_core::Device::CudaEmu);
    assert_close("sgd w on emu tensors", &we.to_vec(), &w.to_vec(), EXACT);
    assert_close("sgd buf on emu tensors", &be.to_vec(), &buf.to_vec(), EXACT);
    assert!(sgd_update(&mut we, &mut buf, &ge, &cfg).is_err());
}

#[test]
fn emu_sum_of_squares_and_clip_match_cpu() {
    sum_of_squares_and_clip_match_cpu(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_sum_of_squares_and_clip_match_cpu() {
    sum_of_squares_and_clip_match_cpu(Gpu::shared(0).expect("GPU 0"));
}

fn sum_of_squares_and_clip_match_cpu<B: Backend>(dev: &B) {
    for (s, n) in [1usize, 777, 300_001].into_iter().enumerate() {
        let x = uniform(70 + s as u64, n, -2.0, 2.0);
        let t = Tensor::from_vec([n], x.clone()).unwrap();
        let cpu = sum_of_squares(&t).unwrap();
        let mut xb = dev.upload(&x).unwrap();
        let gpu = ops::sum_of_squares(dev, &xb).unwrap();
        assert!(
            (gpu - cpu).abs() <= F64_SUM_RTOL * cpu,
            "n {n}: gpu {gpu:e}, cpu {cpu:e}"
        );
        let mut t = t;
        scale_in_place(&mut t, 0.37).unwrap();
        ops::scale_in_place(dev, &mut xb, 0.37).unwrap();
        assert_close(
            "scale",
            &dev.download(&xb).unwrap(),
            t.as_slice().unwrap(),
            EXACT,
        );
    }
}

#[test]
fn emu_softmax_ce_matches_cpu() {
    softmax_ce_matches_cpu(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_softmax_ce_matches_cpu() {
    softmax_ce_matches_cpu(Gpu::shared(0).expect("GPU 0"));
}

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
        ops::softmax_ce_forward(dev, &mut pb, &mut rl, &lb, &yb, classes).unwrap();
        let gpu_loss = ops::mean_loss(dev, &rl).unwrap();
        assert_close(
            "softmax probs",
            &dev.download(&pb).unwrap(),
            probs.as_slice().unwrap(),
            SOFTMAX_TOL,
        );
        assert_close("softmax loss", &[gpu_loss], &[loss], SOFTMAX_TOL);
        // Backward from the CPU's probs, so only the backward's arithmetic is compared.
        let mut db = dev.upload(&vec![f32::NAN; rows * classes]).unwrap();
        ops::softmax_ce_backward(
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
    ops::softmax_ce_forward(dev, &mut pb, &mut rl, &lb, &yb, 3).unwrap();
    let e = ops::mean_loss(dev, &rl).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda softmax_ce_forward: label of row 1 is not below the number of classes"
    );
}

#[test]
fn emu_softmax_ce_tally_matches_cpu() {
    softmax_ce_tally_matches_cpu(tensor_core::Device::CudaEmu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_softmax_ce_tally_matches_cpu() {
    softmax_ce_tally_matches_cpu(tensor_core::Device::Cuda(0));
}

/// Three minibatches through `softmax_ce_forward_tallied` on the CPU and on `device`: the same
/// last loss and running loss sum (to softmax rounding), the same correct counts exactly.
fn softmax_ce_tally_matches_cpu(device: tensor_core::Device) {
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

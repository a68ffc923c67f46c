//! The global-norm reduction and scaling: the CPU functions against the CUDA kernels of
//! grad_norm.cu, on the emulated device (`emu_*`) and on a GPU (`gpu_*`, ignored here;
//! scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::{cuda, scale_in_place, sum_of_squares};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, EXACT};

/// Sums in f64 in a different order than the CPU's (blocks and warps, not chunks).
const F64_SUM_RTOL: f64 = 1e-12;

on_emu_and_gpu!(
    emu_sum_of_squares_and_clip_match_cpu,
    gpu_sum_of_squares_and_clip_match_cpu,
    sum_of_squares_and_clip_match_cpu
);

fn sum_of_squares_and_clip_match_cpu<B: Backend>(dev: &B) {
    for (s, n) in [1usize, 777, 300_001].into_iter().enumerate() {
        let x = uniform(70 + s as u64, n, -2.0, 2.0);
        let t = Tensor::from_vec([n], x.clone()).unwrap();
        let cpu = sum_of_squares(&t).unwrap();
        let mut xb = dev.upload(&x).unwrap();
        let gpu = cuda::sum_of_squares(dev, &xb).unwrap();
        assert!(
            (gpu - cpu).abs() <= F64_SUM_RTOL * cpu,
            "n {n}: gpu {gpu:e}, cpu {cpu:e}"
        );
        let mut t = t;
        scale_in_place(&mut t, 0.37).unwrap();
        cuda::scale_in_place(dev, &mut xb, 0.37).unwrap();
        assert_close(
            "scale",
            &dev.download(&xb).unwrap(),
            t.as_slice().unwrap(),
            EXACT,
        );
    }
}

//! ReLU: the CPU functions against the CUDA kernels of relu.cu, on the emulated device (`emu_*`)
//! and on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::cuda;
use crate::cuda::emu::Emu;
use crate::cuda::launch::{Backend, LaunchConfig, ELEMENTWISE_THREADS, MAX_ELEMENTWISE_BLOCKS};
use crate::cuda::parity::{
    assert_close, compare, on_emu_and_gpu, run_harness, tensor, uniform, BROKEN_RELU_FORWARD,
    EXACT, LENGTHS,
};

on_emu_and_gpu!(emu_relu_matches_cpu, gpu_relu_matches_cpu, relu_matches_cpu);

fn relu_matches_cpu<B: Backend>(dev: &B) {
    for (s, &n) in LENGTHS.iter().enumerate() {
        let x = uniform(10 + s as u64, n, -1.0, 1.0);
        let dy = uniform(20 + s as u64, n, -1.0, 1.0);
        let (mut y_cpu, mut dx_cpu) = (Tensor::zeros([n]), Tensor::zeros([n]));
        crate::relu::relu_forward(&mut y_cpu, &tensor(&x)).unwrap();
        crate::relu::relu_backward(&mut dx_cpu, &tensor(&dy), &tensor(&x)).unwrap();
        let (xb, dyb) = (dev.upload(&x).unwrap(), dev.upload(&dy).unwrap());
        let mut y = dev.upload(&vec![f32::NAN; n]).unwrap();
        let mut dx = dev.upload(&vec![f32::NAN; n]).unwrap();
        cuda::relu_forward(dev, &mut y, &xb).unwrap();
        cuda::relu_backward(dev, &mut dx, &dyb, &xb).unwrap();
        assert_close(
            "relu_forward",
            &dev.download(&y).unwrap(),
            y_cpu.as_slice().unwrap(),
            EXACT,
        );
        assert_close(
            "relu_backward",
            &dev.download(&dx).unwrap(),
            dx_cpu.as_slice().unwrap(),
            EXACT,
        );
    }
}

on_emu_and_gpu!(
    emu_relu_loops_past_the_grid_cap,
    gpu_relu_loops_past_the_grid_cap,
    relu_loops_past_the_grid_cap
);

fn relu_loops_past_the_grid_cap<B: Backend>(dev: &B) {
    let n = (MAX_ELEMENTWISE_BLOCKS * ELEMENTWISE_THREADS) as usize + 7;
    assert_eq!(LaunchConfig::elementwise(n).grid.0, MAX_ELEMENTWISE_BLOCKS);
    let x = uniform(15, n, -1.0, 1.0);
    let mut y_cpu = Tensor::zeros([n]);
    crate::relu::relu_forward(&mut y_cpu, &tensor(&x)).unwrap();
    let xb = dev.upload(&x).unwrap();
    let mut y = dev.upload(&vec![f32::NAN; n]).unwrap();
    cuda::relu_forward(dev, &mut y, &xb).unwrap();
    assert_close(
        "relu_forward",
        &dev.download(&y).unwrap(),
        y_cpu.as_slice().unwrap(),
        EXACT,
    );
}

/// The harness tested on ReLU: a kernel reading the wrong index (`broken_relu_forward`, in
/// `cuda/testdata/emu_harness.cu`) must fail the comparison that relu.cu passes.
#[test]
fn emu_harness_reports_a_kernel_reading_the_wrong_index() {
    let n = 1000;
    let x = uniform(1, n, -1.0, 1.0);
    let mut cpu = Tensor::zeros([n]);
    super::relu_forward(&mut cpu, &Tensor::from_vec([n], x.clone()).unwrap()).unwrap();
    let gpu = run_harness(BROKEN_RELU_FORWARD, &x, n, LaunchConfig::elementwise(n));
    let err = compare(&gpu, cpu.as_slice().unwrap(), EXACT).unwrap_err();
    assert!(err.starts_with("first mismatch at index "), "{err}");
    // The same input through the right kernel passes, so the failure is the bug's.
    let dev = Emu;
    let xb = dev.upload(&x).unwrap();
    let mut y = dev.alloc(n).unwrap();
    cuda::relu_forward(&dev, &mut y, &xb).unwrap();
    assert_close(
        "relu_forward",
        &dev.download(&y).unwrap(),
        cpu.as_slice().unwrap(),
        EXACT,
    );
}

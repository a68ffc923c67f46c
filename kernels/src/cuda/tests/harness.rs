//! The harness tested: a wrong kernel must fail the comparison, and the emulator's barrier,
//! shared memory and warp shuffles must behave as on a GPU.

use super::super::emu::{Emu, EmuBuf};
use super::super::kernel;
use super::super::launch::{Backend, Kernel, LaunchConfig};
use super::super::ops;
use super::super::source::HARNESS;
use super::{assert_close, compare, uniform, EXACT};
use crate::relu::cuda::ReluForwardParams;
use crate::relu::relu_forward;
use tensor_core::Tensor;

/// The harness kernels take `ReluForwardParams`' layout (y, x, n): `HarnessParams` in C.
type HarnessParams = ReluForwardParams;

const BROKEN_RELU_FORWARD: Kernel<HarnessParams> = kernel!(HARNESS, broken_relu_forward);
const REVERSE_IN_BLOCK: Kernel<HarnessParams> = kernel!(HARNESS, reverse_in_block);
const REVERSE_IN_BLOCK_NO_BARRIER: Kernel<HarnessParams> =
    kernel!(HARNESS, reverse_in_block_no_barrier);
const WARP_SUMS: Kernel<HarnessParams> = kernel!(HARNESS, warp_sums);

fn run(kernel: Kernel<HarnessParams>, x: &[f32], out_len: usize, cfg: LaunchConfig) -> Vec<f32> {
    let dev = Emu;
    let xb = dev.upload(x).unwrap();
    let mut y: EmuBuf<f32> = dev.alloc(out_len).unwrap();
    let p = HarnessParams {
        y: dev.addr_mut(&mut y),
        x: dev.addr(&xb),
        n: x.len() as u32,
    };
    // SAFETY: every harness kernel reads x[0..n) and writes y[0..out_len) under these configs.
    unsafe { dev.launch(kernel, cfg, &p) }.unwrap();
    dev.download(&y).unwrap()
}

#[test]
fn emu_harness_reports_a_kernel_reading_the_wrong_index() {
    let n = 1000;
    let x = uniform(1, n, -1.0, 1.0);
    let mut cpu = Tensor::zeros([n]);
    relu_forward(&mut cpu, &Tensor::from_vec([n], x.clone()).unwrap()).unwrap();
    let gpu = run(BROKEN_RELU_FORWARD, &x, n, LaunchConfig::elementwise(n));
    let err = compare(&gpu, cpu.as_slice().unwrap(), EXACT).unwrap_err();
    assert!(err.starts_with("first mismatch at index "), "{err}");
    // The same input through the right kernel passes, so the failure is the bug's.
    let dev = Emu;
    let xb = dev.upload(&x).unwrap();
    let mut y = dev.alloc(n).unwrap();
    ops::relu_forward(&dev, &mut y, &xb).unwrap();
    assert_close(
        "relu_forward",
        &dev.download(&y).unwrap(),
        cpu.as_slice().unwrap(),
        EXACT,
    );
}

#[test]
fn emu_barrier_is_real_and_a_missing_one_is_caught() {
    let (threads, blocks) = (256u32, 8u32);
    let n = (threads * blocks) as usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let want: Vec<f32> = x
        .chunks(threads as usize)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    let cfg = LaunchConfig::linear(blocks, threads, threads * 4);
    assert_close(
        "reverse with barrier",
        &run(REVERSE_IN_BLOCK, &x, n, cfg),
        &want,
        EXACT,
    );
    // Without it, threads read slots their partners have not written yet: still the NaN poison
    // the emulator fills shared memory with, or nothing sensible.
    let racy = run(REVERSE_IN_BLOCK_NO_BARRIER, &x, n, cfg);
    assert!(
        compare(&racy, &want, EXACT).is_err(),
        "the missing barrier went unnoticed"
    );
}

#[test]
fn emu_warp_shuffles_sum_each_warp() {
    let n = 256 + 64;
    let x = uniform(2, n, -1.0, 1.0);
    let got = run(WARP_SUMS, &x, n / 32, LaunchConfig::linear(5, 64, 0));
    // The shuffle tree's order: offsets 16, 8, 4, 2, 1 (lane i adds lane i + offset).
    let want: Vec<f32> = x
        .chunks(32)
        .map(|w| {
            let mut v = w.to_vec();
            for off in [16, 8, 4, 2, 1] {
                v = (0..32)
                    .map(|i| {
                        if i + off < 32 {
                            v[i] + v[i + off]
                        } else {
                            v[i] + v[i]
                        }
                    })
                    .collect();
            }
            v[0]
        })
        .collect();
    assert_close("warp sums", &got, &want, EXACT);
}

//! The parity suite's harness: the same seeded input through the CPU and a CUDA version of an
//! op, compared elementwise with named tolerances (a failure names the first bad index and both
//! values), which every op's `cuda_tests.rs` uses; and the kernels that test the harness itself
//! (`testdata/emu_harness.cu`, tested in `cuda/tests.rs` and `relu/cuda_tests.rs`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::emu::{Emu, EmuBuf};
use super::kernel;
use super::launch::{params, Backend, Kernel, LaunchConfig};
use super::source::HARNESS;

/// Bit-identical: the kernel does the CPU's arithmetic in the CPU's order, one rounding per op.
pub(crate) const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};

/// |gpu - cpu| <= atol + rtol * |cpu|, elementwise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tol {
    pub atol: f32,
    pub rtol: f32,
}

/// The first index where `gpu` and `cpu` differ by more than `tol` (NaN never passes), with both
/// values, or `Ok` when every value is within it.
pub(crate) fn compare(gpu: &[f32], cpu: &[f32], tol: Tol) -> Result<(), String> {
    if gpu.len() != cpu.len() {
        return Err(format!("gpu has {} values, cpu {}", gpu.len(), cpu.len()));
    }
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let ok = (g - c).abs() <= tol.atol + tol.rtol * c.abs() || (g.is_infinite() && g == c);
        if !ok {
            return Err(format!(
                "first mismatch at index {i}: gpu {g:e}, cpu {c:e} (tolerance {tol:?})"
            ));
        }
    }
    Ok(())
}

/// Panics with `what` and [`compare`]'s message unless `gpu` matches `cpu` within `tol`.
#[track_caller]
pub(crate) fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: Tol) {
    if let Err(msg) = compare(gpu, cpu, tol) {
        panic!("{what}: {msg}");
    }
}

/// The two tests of parity check `$check` (a function of the backend): `$emu` on the emulated
/// device, and `$gpu` on GPU 0, ignored here (scripts/gpu-check.sh runs the `gpu_*` tests on a
/// lent GPU).
macro_rules! on_emu_and_gpu {
    ($emu:ident, $gpu:ident, $check:ident) => {
        #[test]
        fn $emu() {
            $check(&$crate::cuda::emu::Emu);
        }

        #[test]
        #[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
        fn $gpu() {
            $check($crate::cuda::gpu::Gpu::shared(0).expect("GPU 0"));
        }
    };
}
pub(crate) use on_emu_and_gpu;

/// Odd lengths for the elementwise kernels: a single value, a partial block, several blocks and
/// a partial one.
pub(crate) const LENGTHS: [usize; 3] = [1, 1000, 20_011];

/// `v` as a tensor of shape (len,).
pub(crate) fn tensor(v: &[f32]) -> Tensor {
    Tensor::from_vec([v.len()], v.to_vec()).unwrap()
}

/// `n` values uniform in [lo, hi) from `seed`.
pub(crate) fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

params! {
    /// emu_harness.cu `HarnessParams`: x: (n) -> y.
    pub struct HarnessParams {
        pub y: u64,
        pub x: u64,
        pub n: u32,
    }
}

/// A ReLU that reads x[i + 1]: the comparison must catch it.
pub(crate) const BROKEN_RELU_FORWARD: Kernel<HarnessParams> = kernel!(HARNESS, broken_relu_forward);
/// Reverses each block's slice through dynamic shared memory, with and without the barrier.
pub(crate) const REVERSE_IN_BLOCK: Kernel<HarnessParams> = kernel!(HARNESS, reverse_in_block);
pub(crate) const REVERSE_IN_BLOCK_NO_BARRIER: Kernel<HarnessParams> =
    kernel!(HARNESS, reverse_in_block_no_barrier);
/// Each warp's sum by shuffles.
pub(crate) const WARP_SUMS: Kernel<HarnessParams> = kernel!(HARNESS, warp_sums);

/// Runs harness kernel `kernel` on the emulated device over x: (n) under `cfg`; returns
/// y: (out_len).
pub(crate) fn run_harness(
    kernel: Kernel<HarnessParams>,
    x: &[f32],
    out_len: usize,
    cfg: LaunchConfig,
) -> Vec<f32> {
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

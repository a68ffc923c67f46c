//! Elementwise sums: the CPU functions against the CUDA kernels of add.cu, on the emulated
//! device (`emu_*`) and on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::cuda;
use crate::cuda::emu::Emu;
use crate::cuda::gpu::Gpu;
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, uniform, EXACT};

/// Odd lengths: a single value, a partial block, several blocks and a partial one.
const LENGTHS: [usize; 3] = [1, 1000, 20_011];

fn tensor(v: &[f32]) -> Tensor {
    Tensor::from_vec([v.len()], v.to_vec()).unwrap()
}

#[test]
fn emu_add_matches_cpu() {
    add_matches_cpu(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_add_matches_cpu() {
    add_matches_cpu(Gpu::shared(0).expect("GPU 0"));
}

fn add_matches_cpu<B: Backend>(dev: &B) {
    for (s, &n) in LENGTHS.iter().enumerate() {
        let a = uniform(30 + s as u64, n, -2.0, 2.0);
        let b = uniform(40 + s as u64, n, -2.0, 2.0);
        let mut y_cpu = Tensor::zeros([n]);
        crate::add::add(&mut y_cpu, &tensor(&a), &tensor(&b)).unwrap();
        let mut acc_cpu = tensor(&a);
        crate::add::add_assign(&mut acc_cpu, &tensor(&b)).unwrap();
        let (ab, bb) = (dev.upload(&a).unwrap(), dev.upload(&b).unwrap());
        let mut y = dev.upload(&vec![f32::NAN; n]).unwrap();
        cuda::add(dev, &mut y, &ab, &bb).unwrap();
        let mut acc = dev.upload(&a).unwrap();
        cuda::add_assign(dev, &mut acc, &bb).unwrap();
        assert_close(
            "add",
            &dev.download(&y).unwrap(),
            y_cpu.as_slice().unwrap(),
            EXACT,
        );
        assert_close(
            "add_assign",
            &dev.download(&acc).unwrap(),
            acc_cpu.as_slice().unwrap(),
            EXACT,
        );
    }
}

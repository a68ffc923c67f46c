//! Elementwise sums: the CPU functions against the CUDA kernels of add.cu, on the emulated
//! device (`emu_*`) and on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::cuda;
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, tensor, uniform, EXACT, LENGTHS};

on_emu_and_gpu!(emu_add_matches_cpu, gpu_add_matches_cpu, add_matches_cpu);

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

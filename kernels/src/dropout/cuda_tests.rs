//! Dropout: the CPU function against the CUDA kernel of dropout.cu (the same Philox mask), on the
//! emulated device (`emu_*`) and on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::cuda;
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, tensor, uniform, EXACT, LENGTHS};
use crate::philox::MaskKey;

on_emu_and_gpu!(
    emu_dropout_mask_matches_cpu_exactly,
    gpu_dropout_mask_matches_cpu_exactly,
    dropout_mask_matches_cpu_exactly
);

fn dropout_mask_matches_cpu_exactly<B: Backend>(dev: &B) {
    let key = MaskKey {
        seed: 0x1234_5678_9abc,
        step: (7u64 << 32) + 3,
        layer: 5,
    };
    for (s, &n) in LENGTHS.iter().enumerate() {
        let x = uniform(50 + s as u64, n, 0.5, 1.5);
        for keep in [0.9f32, 0.5, 1.0] {
            let mut y_cpu = Tensor::zeros([n]);
            crate::dropout::dropout_forward(&mut y_cpu, &tensor(&x), keep, key).unwrap();
            let xb = dev.upload(&x).unwrap();
            let mut y = dev.upload(&vec![f32::NAN; n]).unwrap();
            cuda::dropout_apply(dev, &mut y, &xb, keep, key).unwrap();
            // Inputs are >= 0.5, so a zero is a dropped value: the masks themselves are equal.
            assert_close(
                "dropout",
                &dev.download(&y).unwrap(),
                y_cpu.as_slice().unwrap(),
                EXACT,
            );
        }
    }
    let (xb, mut y) = (dev.upload(&[1.0f32]).unwrap(), dev.alloc(1).unwrap());
    let e = cuda::dropout_apply(dev, &mut y, &xb, 0.0, key).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda dropout_apply: keep probability 0 is outside (0, 1]"
    );
}

//! DropBlock: the CPU mask and its application against the CUDA kernels of dropblock.cu (the
//! same Philox draws, so the same mask), on the emulated device (`emu_*`) and on a GPU (`gpu_*`,
//! ignored here; scripts/gpu-check.sh runs them).

use tensor_core::{Device, Shape, Tensor};

use super::{cuda, dropblock_apply, dropblock_mask};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, EXACT};
use crate::philox::MaskKey;

on_emu_and_gpu!(
    emu_dropblock_mask_matches_cpu_exactly,
    gpu_dropblock_mask_matches_cpu_exactly,
    dropblock_mask_matches_cpu_exactly
);

fn dropblock_mask_matches_cpu_exactly<B: Backend>(dev: &B) {
    let key = MaskKey {
        seed: 99,
        step: 12,
        layer: 3,
    };
    // Odd maps, one no larger than the block, the seed's third block (512 channels, 8 x 8,
    // block 5) at batch 2, and 32 x 32 maps (the seed's first block: a 28 x 28 grid of centres).
    for (s, dims) in [
        [2usize, 3, 11, 7],
        [1, 2, 5, 5],
        [2, 512, 8, 8],
        [1, 1, 4, 9],
        [2, 16, 32, 32],
    ]
    .into_iter()
    .enumerate()
    {
        let n: usize = dims.iter().product();
        let cpu = dropblock_mask(&Shape::new(&dims), Device::Cpu, 5, 0.8, key).unwrap();
        let mut mb = dev.upload(&vec![7u8; n]).unwrap();
        let mut sb = dev.upload(&[f32::NAN]).unwrap();
        let drawn = cuda::dropblock_mask(dev, &mut mb, &mut sb, dims, 5, 0.8, key).unwrap();
        let Some(cpu) = cpu else {
            assert!(!drawn, "case {s}: the CPU passes x through");
            continue;
        };
        assert!(drawn, "case {s}: drawn");
        let scale = dev.download(&sb).unwrap()[0];
        assert_eq!(
            scale.to_bits(),
            cpu.scale().unwrap().to_bits(),
            "case {s}: scale"
        );
        assert_eq!(
            dev.download(&mb).unwrap(),
            cpu.keep().unwrap(),
            "case {s}: mask"
        );
        let x = uniform(100 + s as u64, n, -1.0, 1.0);
        let mut y = Tensor::zeros(dims);
        dropblock_apply(&mut y, &Tensor::from_vec(dims, x.clone()).unwrap(), &cpu).unwrap();
        let mut yb = dev.upload(&vec![f32::NAN; n]).unwrap();
        cuda::dropblock_apply(dev, &mut yb, &dev.upload(&x).unwrap(), &mb, &sb).unwrap();
        assert_close(
            "dropblock apply",
            &dev.download(&yb).unwrap(),
            y.as_slice().unwrap(),
            EXACT,
        );
    }
}

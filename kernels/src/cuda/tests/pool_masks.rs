//! Max-pooling and the DropBlock mask: the CPU functions against the emulated kernels.

use super::super::emu::Emu;
use super::super::gpu::Gpu;
use super::super::launch::Backend;
use super::super::ops;
use super::{assert_close, uniform, EXACT};
use crate::dropblock::{dropblock_apply, dropblock_mask};
use crate::maxpool::{maxpool2d_backward, maxpool2d_forward, Pool2d};
use crate::philox::MaskKey;
use tensor_core::{Device, Shape, Tensor};

#[test]
fn emu_maxpool_matches_cpu() {
    maxpool_matches_cpu(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_maxpool_matches_cpu() {
    maxpool_matches_cpu(Gpu::shared(0).expect("GPU 0"));
}

fn maxpool_matches_cpu<B: Backend>(dev: &B) {
    // Odd planes, a window larger than the stride, and the seed's last pool (batch 250, 1024
    // channels, 4 x 4 -> 2 x 2).
    let cases = [
        ([2usize, 3, 17, 13], Pool2d::square(3, 2).unwrap()),
        ([1, 2, 5, 6], Pool2d::new((2, 3), (1, 2)).unwrap()),
        ([250, 1024, 4, 4], Pool2d::square(3, 2).unwrap()),
    ];
    for (s, (dims, pool)) in cases.into_iter().enumerate() {
        let x = uniform(90 + s as u64, dims.iter().product(), -1.0, 1.0);
        let xt = Tensor::from_vec(dims, x.clone()).unwrap();
        let out = pool.output_dims("test", &xt).unwrap();
        let m: usize = out.iter().product();
        let mut y = Tensor::zeros(out);
        let argmax = maxpool2d_forward(&mut y, &xt, &pool).unwrap();
        let dy = uniform(95 + s as u64, m, -1.0, 1.0);
        let mut dx = Tensor::zeros(dims);
        maxpool2d_backward(
            &mut dx,
            &Tensor::from_vec(out, dy.clone()).unwrap(),
            &argmax,
            &pool,
        )
        .unwrap();

        let xb = dev.upload(&x).unwrap();
        let mut yb = dev.upload(&vec![f32::NAN; m]).unwrap();
        let mut ab = dev.upload(&vec![u32::MAX; m]).unwrap();
        ops::maxpool_forward(dev, &mut yb, &mut ab, &xb, dims, &pool).unwrap();
        assert_close(
            "maxpool y",
            &dev.download(&yb).unwrap(),
            y.as_slice().unwrap(),
            EXACT,
        );
        assert_eq!(
            dev.download(&ab).unwrap(),
            argmax.to_host().unwrap(),
            "maxpool argmax"
        );
        let mut dxb = dev.upload(&vec![f32::NAN; dx.len()]).unwrap();
        ops::maxpool_backward(dev, &mut dxb, &dev.upload(&dy).unwrap(), &ab, dims, &pool).unwrap();
        assert_close(
            "maxpool dx",
            &dev.download(&dxb).unwrap(),
            dx.as_slice().unwrap(),
            EXACT,
        );
    }
}

#[test]
fn emu_dropblock_mask_matches_cpu_exactly() {
    dropblock_mask_matches_cpu_exactly(&Emu);
}

#[test]
#[ignore = "needs a GPU; scripts/gpu-check.sh runs it"]
fn gpu_dropblock_mask_matches_cpu_exactly() {
    dropblock_mask_matches_cpu_exactly(Gpu::shared(0).expect("GPU 0"));
}

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
        let drawn = ops::dropblock_mask(dev, &mut mb, &mut sb, dims, 5, 0.8, key).unwrap();
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
        ops::dropblock_apply(dev, &mut yb, &dev.upload(&x).unwrap(), &mb, &sb).unwrap();
        assert_close(
            "dropblock apply",
            &dev.download(&yb).unwrap(),
            y.as_slice().unwrap(),
            EXACT,
        );
    }
}

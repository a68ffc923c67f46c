//! Max-pooling: the CPU functions against the CUDA kernels of maxpool.cu, on the emulated device
//! (`emu_*`) and on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::{cuda, maxpool2d_backward, maxpool2d_forward, Pool2d};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, EXACT};

on_emu_and_gpu!(
    emu_maxpool_matches_cpu,
    gpu_maxpool_matches_cpu,
    maxpool_matches_cpu
);

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
        cuda::maxpool_forward(dev, &mut yb, &mut ab, &xb, dims, &pool).unwrap();
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
        cuda::maxpool_backward(dev, &mut dxb, &dev.upload(&dy).unwrap(), &ab, dims, &pool).unwrap();
        assert_close(
            "maxpool dx",
            &dev.download(&dxb).unwrap(),
            dx.as_slice().unwrap(),
            EXACT,
        );
    }
}

//! Adam: the CPU function against the CUDA kernel of adam.cu, on the emulated device (`emu_*`)
//! and on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::{adam_update, cuda, Adam};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, Tol};

/// The same float operations as the CPU, but a GPU may contract a * b + c into one rounding
/// (NVRTC's default --fmad=true): a few ulps.
const FMA_TOL: Tol = Tol {
    atol: 1e-7,
    rtol: 1e-6,
};

on_emu_and_gpu!(emu_adam_matches_cpu, gpu_adam_matches_cpu, adam_matches_cpu);

fn adam_matches_cpu<B: Backend>(dev: &B) {
    // An odd length and a real one: the seed's conv weight 128 x 128 x 3 x 3.
    for n in [1001usize, 128 * 128 * 9] {
        let cfg = Adam::default();
        let w0 = uniform(60, n, -0.5, 0.5);
        let (mut w, mut m, mut v) = (
            Tensor::from_vec([n], w0.clone()).unwrap(),
            Tensor::zeros([n]),
            Tensor::zeros([n]),
        );
        let (mut wb, mut mb, mut vb) = (
            dev.upload(&w0).unwrap(),
            dev.alloc(n).unwrap(),
            dev.alloc(n).unwrap(),
        );
        for t in 1..=3u64 {
            let g = uniform(60 + t, n, -1.0, 1.0);
            adam_update(
                &mut w,
                &mut m,
                &mut v,
                &Tensor::from_vec([n], g.clone()).unwrap(),
                &cfg,
                t,
            )
            .unwrap();
            cuda::adam_update(
                dev,
                &mut wb,
                &mut mb,
                &mut vb,
                &dev.upload(&g).unwrap(),
                &cfg,
                t,
            )
            .unwrap();
        }
        assert_close(
            "adam m",
            &dev.download(&mb).unwrap(),
            m.as_slice().unwrap(),
            FMA_TOL,
        );
        assert_close(
            "adam v",
            &dev.download(&vb).unwrap(),
            v.as_slice().unwrap(),
            FMA_TOL,
        );
        assert_close(
            "adam w",
            &dev.download(&wb).unwrap(),
            w.as_slice().unwrap(),
            FMA_TOL,
        );
    }
    let mut b = dev.alloc(3).unwrap();
    let e = cuda::adam_update(
        dev,
        &mut b,
        &mut dev.alloc(3).unwrap(),
        &mut dev.alloc(2).unwrap(),
        &dev.alloc(3).unwrap(),
        &Adam::default(),
        1,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda adam_update: v holds 2 values, expected 3"
    );
}

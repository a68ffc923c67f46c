//! SGD: the CPU function against the CUDA kernel of sgd.cu, on the emulated device (`emu_*`) and
//! on a GPU (`gpu_*`, ignored here; scripts/gpu-check.sh runs them).

use tensor_core::Tensor;

use super::{cuda, sgd_update, Sgd};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, EXACT};

on_emu_and_gpu!(emu_sgd_matches_cpu, gpu_sgd_matches_cpu, sgd_matches_cpu);

fn sgd_matches_cpu<B: Backend>(dev: &B) {
    let classical = Sgd {
        lr: 0.05,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
    };
    let configs = [
        classical,
        Sgd {
            nesterov: true,
            ..classical
        },
        Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            ..classical
        },
    ];
    // An odd length and a real one: the seed's conv weight 128 x 128 x 3 x 3.
    for (c, cfg) in configs.iter().enumerate() {
        for n in [1001usize, 128 * 128 * 9] {
            let w0 = uniform(90 + c as u64, n, -0.5, 0.5);
            let (mut w, mut buf) = (
                Tensor::from_vec([n], w0.clone()).unwrap(),
                Tensor::zeros([n]),
            );
            let (mut wb, mut bb) = (dev.upload(&w0).unwrap(), dev.alloc(n).unwrap());
            for t in 1..=3u64 {
                let g = uniform(90 + 10 * t + c as u64, n, -1.0, 1.0);
                sgd_update(
                    &mut w,
                    &mut buf,
                    &Tensor::from_vec([n], g.clone()).unwrap(),
                    cfg,
                )
                .unwrap();
                cuda::sgd_update(dev, &mut wb, &mut bb, &dev.upload(&g).unwrap(), cfg).unwrap();
            }
            let what = format!("sgd {cfg:?}, n {n}");
            // sgd.cu rounds every operation as the CPU does (no contraction): bit for bit.
            let buf_gpu = dev.download(&bb).unwrap();
            assert_close(&what, &buf_gpu, buf.as_slice().unwrap(), EXACT);
            let w_gpu = dev.download(&wb).unwrap();
            assert_close(&what, &w_gpu, w.as_slice().unwrap(), EXACT);
        }
    }
    let mut b = dev.alloc(3).unwrap();
    let e = cuda::sgd_update(
        dev,
        &mut b,
        &mut dev.alloc(2).unwrap(),
        &dev.alloc(3).unwrap(),
        &classical,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cuda sgd_update: buf holds 2 values, expected 3"
    );
}

/// `sgd_update` on tensors of the emulated device dispatches to the kernel, and refuses a mix
/// of devices.
#[test]
fn emu_sgd_update_dispatches_on_the_tensors_device() {
    let cfg = Sgd {
        lr: 0.1,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.01,
    };
    let n = 777;
    let (w0, g) = (uniform(120, n, -1.0, 1.0), uniform(121, n, -1.0, 1.0));
    let (mut w, mut buf) = (Tensor::from_vec([n], w0).unwrap(), Tensor::zeros([n]));
    let g = Tensor::from_vec([n], g).unwrap();
    let on_emu = |t: &Tensor| crate::cuda::to_device(t, tensor_core::Device::CudaEmu).unwrap();
    let (mut we, mut be, ge) = (on_emu(&w), on_emu(&buf), on_emu(&g));
    sgd_update(&mut w, &mut buf, &g, &cfg).unwrap();
    sgd_update(&mut we, &mut be, &ge, &cfg).unwrap();
    assert_eq!(we.device(), tensor_core::Device::CudaEmu);
    assert_close("sgd w on emu tensors", &we.to_vec(), &w.to_vec(), EXACT);
    assert_close("sgd buf on emu tensors", &be.to_vec(), &buf.to_vec(), EXACT);
    assert!(sgd_update(&mut we, &mut buf, &ge, &cfg).is_err());
}

//! Each op's tensor-level entry point (`crate::<op>`) on tensors of the emulated device against
//! the same call on CPU tensors: the device dispatch of every op's `mod.rs`, end to end.

use tensor_core::{Device, Tensor};

use crate::adam::{adam_update, Adam};
use crate::add::{add, add_assign};
use crate::batchnorm::{
    batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train, batchnorm_relu_backward,
    batchnorm_relu_forward_train, BatchNormConfig,
};
use crate::cuda::parity::{assert_close, uniform, Tol, EXACT};
use crate::cuda::to_device;
use crate::dropblock::{dropblock_apply, dropblock_mask};
use crate::dropout::{dropout_backward, dropout_forward};
use crate::grad_norm::{scale_in_place, sum_of_squares};
use crate::maxpool::{maxpool2d_backward, maxpool2d_forward, Pool2d};
use crate::philox::MaskKey;
use crate::relu::{relu_backward, relu_forward};
use crate::softmax_ce::{softmax_ce_backward, softmax_ce_forward};
use crate::Error;

/// A GPU may contract a * b + c into one rounding: a few ulps (as the kernel parity tests).
const FMA_TOL: Tol = Tol {
    atol: 1e-7,
    rtol: 1e-6,
};

/// Batch norm's f64 sums run in another order than the CPU's (as the kernel parity tests).
const BN_TOL: Tol = Tol {
    atol: 1e-5,
    rtol: 1e-5,
};

fn cpu(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(dims, uniform(seed, n, -1.0, 1.0)).unwrap()
}

fn emu(t: &Tensor) -> Tensor {
    let d = to_device(t, Device::CudaEmu).unwrap();
    assert_eq!(d.device(), Device::CudaEmu);
    d
}

fn zeros_like_on(t: &Tensor, device: Device) -> Tensor {
    crate::cuda::zeros_on(t.shape().clone(), device).unwrap()
}

#[test]
fn emu_tensor_elementwise_ops_match_cpu() {
    let (x, dy) = (cpu(&[3, 5, 7], 1), cpu(&[3, 5, 7], 2));
    let (ex, edy) = (emu(&x), emu(&dy));
    let (mut y, mut ey) = (Tensor::zeros([3, 5, 7]), zeros_like_on(&x, Device::CudaEmu));

    relu_forward(&mut y, &x).unwrap();
    relu_forward(&mut ey, &ex).unwrap();
    assert_close("relu_forward", &ey.to_vec(), &y.to_vec(), EXACT);
    relu_backward(&mut y, &dy, &x).unwrap();
    relu_backward(&mut ey, &edy, &ex).unwrap();
    assert_close("relu_backward", &ey.to_vec(), &y.to_vec(), EXACT);

    add(&mut y, &x, &dy).unwrap();
    add(&mut ey, &ex, &edy).unwrap();
    assert_close("add", &ey.to_vec(), &y.to_vec(), EXACT);
    add_assign(&mut y, &x).unwrap();
    add_assign(&mut ey, &ex).unwrap();
    assert_close("add_assign", &ey.to_vec(), &y.to_vec(), EXACT);

    let key = MaskKey {
        seed: 9,
        step: 3,
        layer: 1,
    };
    dropout_forward(&mut y, &x, 0.7, key).unwrap();
    dropout_forward(&mut ey, &ex, 0.7, key).unwrap();
    assert_close("dropout_forward", &ey.to_vec(), &y.to_vec(), EXACT);
    dropout_backward(&mut y, &dy, 0.7, key).unwrap();
    dropout_backward(&mut ey, &edy, 0.7, key).unwrap();
    assert_close("dropout_backward", &ey.to_vec(), &y.to_vec(), EXACT);

    let (s, es) = (sum_of_squares(&x).unwrap(), sum_of_squares(&ex).unwrap());
    assert!(
        (s - es).abs() <= 1e-12 * s,
        "sum_of_squares: cpu {s}, emu {es}"
    );
    scale_in_place(&mut y, 0.25).unwrap();
    scale_in_place(&mut ey, 0.25).unwrap();
    assert_close("scale_in_place", &ey.to_vec(), &y.to_vec(), EXACT);
}

#[test]
fn emu_tensor_adam_loss_pool_dropblock_match_cpu() {
    let n = 333;
    let (w, g) = (cpu(&[n], 3), cpu(&[n], 4));
    let (mut w, mut m, mut v) = (w.clone(), Tensor::zeros([n]), Tensor::zeros([n]));
    let (mut ew, mut em, mut ev, eg) = (emu(&w), emu(&m), emu(&v), emu(&g));
    for t in 1..=2 {
        adam_update(&mut w, &mut m, &mut v, &g, &Adam::default(), t).unwrap();
        adam_update(&mut ew, &mut em, &mut ev, &eg, &Adam::default(), t).unwrap();
    }
    assert_close("adam w", &ew.to_vec(), &w.to_vec(), FMA_TOL);

    let logits = cpu(&[6, 11], 5);
    let labels = [0u32, 10, 3, 3, 7, 1];
    let (mut probs, mut eprobs) = (Tensor::zeros([6, 11]), emu(&Tensor::zeros([6, 11])));
    let loss = softmax_ce_forward(&mut probs, &logits, &labels).unwrap();
    let eloss = softmax_ce_forward(&mut eprobs, &emu(&logits), &labels).unwrap();
    assert!(
        (loss - eloss).abs() <= 1e-6 * loss,
        "loss: cpu {loss}, emu {eloss}"
    );
    let (mut dl, mut edl) = (Tensor::zeros([6, 11]), emu(&Tensor::zeros([6, 11])));
    softmax_ce_backward(&mut dl, &probs, &labels).unwrap();
    softmax_ce_backward(&mut edl, &eprobs, &labels).unwrap();
    let tol = Tol {
        atol: 1e-8,
        rtol: 2e-7,
    };
    assert_close("softmax_ce_backward", &edl.to_vec(), &dl.to_vec(), tol);

    let x = cpu(&[2, 3, 9, 7], 6);
    let pool = Pool2d::square(3, 2).unwrap();
    let out = pool.output_dims("test", &x).unwrap();
    let (mut y, mut ey) = (Tensor::zeros(out), emu(&Tensor::zeros(out)));
    let am = maxpool2d_forward(&mut y, &x, &pool).unwrap();
    let eam = maxpool2d_forward(&mut ey, &emu(&x), &pool).unwrap();
    assert_close("maxpool forward", &ey.to_vec(), &y.to_vec(), EXACT);
    assert_eq!(
        eam.device(),
        Device::CudaEmu,
        "maxpool argmax stays on the device"
    );
    assert_eq!(
        eam.to_host().unwrap(),
        am.to_host().unwrap(),
        "maxpool argmax"
    );
    let dy = cpu(&out, 7);
    let (mut dx, mut edx) = (Tensor::zeros(x.dims()), emu(&Tensor::zeros(x.dims())));
    maxpool2d_backward(&mut dx, &dy, &am, &pool).unwrap();
    maxpool2d_backward(&mut edx, &emu(&dy), &eam, &pool).unwrap();
    assert_close("maxpool backward", &edx.to_vec(), &dx.to_vec(), EXACT);

    let draw = |device| {
        dropblock_mask(x.shape(), device, 3, 0.8, MaskKey::default())
            .unwrap()
            .expect("a 9 x 7 map with block 3 draws a mask")
    };
    let (mask, emask) = (draw(Device::Cpu), draw(Device::CudaEmu));
    assert_eq!(
        emask.device(),
        Device::CudaEmu,
        "dropblock mask stays on the device"
    );
    let (mut o, mut eo) = (Tensor::zeros(x.dims()), emu(&Tensor::zeros(x.dims())));
    dropblock_apply(&mut o, &x, &mask).unwrap();
    dropblock_apply(&mut eo, &emu(&x), &emask).unwrap();
    assert_close("dropblock_apply", &eo.to_vec(), &o.to_vec(), EXACT);
}

#[test]
fn emu_tensor_batchnorm_matches_cpu() {
    let (x, dy) = (cpu(&[3, 4, 5, 6], 8), cpu(&[3, 4, 5, 6], 9));
    let (gamma, beta) = (cpu(&[4], 10), cpu(&[4], 11));
    let (mut rm, mut rv) = (Tensor::zeros([4]), Tensor::full([4], 1.0));
    let (mut erm, mut erv) = (emu(&rm), emu(&rv));
    let (eg, eb) = (emu(&gamma), emu(&beta));
    let (mut y, mut ey) = (Tensor::zeros(x.dims()), emu(&Tensor::zeros(x.dims())));
    let cfg = BatchNormConfig::default();
    let s = batchnorm_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg).unwrap();
    let es =
        batchnorm_forward_train(&mut ey, &emu(&x), &eg, &eb, &mut erm, &mut erv, &cfg).unwrap();
    assert_close("bn train y", &ey.to_vec(), &y.to_vec(), BN_TOL);
    assert_close("bn running_var", &erv.to_vec(), &rv.to_vec(), BN_TOL);
    let (mut dx, mut edx) = (Tensor::zeros(x.dims()), emu(&Tensor::zeros(x.dims())));
    let (mut dg, mut db) = (Tensor::zeros([4]), Tensor::zeros([4]));
    let (mut edg, mut edb) = (emu(&dg), emu(&db));
    batchnorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &gamma, &s).unwrap();
    batchnorm_backward(&mut edx, &mut edg, &mut edb, &emu(&dy), &emu(&x), &eg, &es).unwrap();
    assert_close("bn dx", &edx.to_vec(), &dx.to_vec(), BN_TOL);
    assert_close("bn dgamma", &edg.to_vec(), &dg.to_vec(), BN_TOL);
    assert_close("bn dbeta", &edb.to_vec(), &db.to_vec(), BN_TOL);
    batchnorm_forward_eval(&mut y, &x, &gamma, &beta, &rm, &rv, cfg.eps).unwrap();
    batchnorm_forward_eval(&mut ey, &emu(&x), &eg, &eb, &erm, &erv, cfg.eps).unwrap();
    assert_close("bn eval y", &ey.to_vec(), &y.to_vec(), BN_TOL);

    // relu(bn(x)) and its backward: the CPU folds the ReLU's mask into its passes, the device
    // runs the ReLU's backward on a copy of dy first.
    let s = batchnorm_relu_forward_train(&mut y, &x, &gamma, &beta, &mut rm, &mut rv, &cfg);
    let (s, mask) = s.unwrap();
    let (ex, edy) = (emu(&x), emu(&dy));
    let es = batchnorm_relu_forward_train(&mut ey, &ex, &eg, &eb, &mut erm, &mut erv, &cfg);
    let (es, emask) = es.unwrap();
    assert_close("bn relu train y", &ey.to_vec(), &y.to_vec(), BN_TOL);
    batchnorm_relu_backward(&mut dx, &mut dg, &mut db, &dy, &mask, &x, &gamma, &s).unwrap();
    let (edx_, edg_, edb_) = (&mut edx, &mut edg, &mut edb);
    batchnorm_relu_backward(edx_, edg_, edb_, &edy, &emask, &ex, &eg, &es).unwrap();
    assert_close("bn relu dx", &edx.to_vec(), &dx.to_vec(), BN_TOL);
    assert_close("bn relu dgamma", &edg.to_vec(), &dg.to_vec(), BN_TOL);
    assert_close("bn relu dbeta", &edb.to_vec(), &db.to_vec(), BN_TOL);
    assert_eq!(edy.to_vec(), dy.to_vec(), "dy is read, not written");
}

#[test]
fn emu_tensor_ops_refuse_mixed_devices() {
    let x = cpu(&[4], 12);
    let (ex, mut ey) = (emu(&x), emu(&x));
    let e = add(&mut ey, &ex, &x).unwrap_err();
    assert!(matches!(e, Error::Tensor(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "add: b is on cpu, the other tensors on cuda-emu"
    );
    let e = relu_forward(&mut Tensor::zeros([4]), &ex).unwrap_err();
    assert_eq!(
        e.to_string(),
        "relu_forward: x is on cuda-emu, the other tensors on cpu"
    );
}

/// Sums of `terms` products in another order (and, for 3x3 stride-1 convolutions, the CPU's
/// Winograd transforms against the device's direct sums): a few ulps of each term.
fn sum_tol(terms: usize) -> Tol {
    Tol {
        atol: 32.0 * terms as f32 * f32::EPSILON / 2.0,
        rtol: 1e-5,
    }
}

#[test]
fn emu_tensor_conv2d_and_matmul_match_cpu() {
    use crate::conv2d::{conv2d_backward_data, conv2d_backward_weight, conv2d_forward, Conv2dGeom};
    use crate::gemm::{matmul, Trans};

    for geom in [Conv2dGeom::SAME_3X3, Conv2dGeom { stride: 2, pad: 1 }] {
        let (x, w) = (cpu(&[2, 3, 7, 6], 13), cpu(&[5, 3, 3, 3], 14));
        let (ex, ew) = (emu(&x), emu(&w));
        let oh = (7 + 2 - 3) / geom.stride + 1;
        let ow = (6 + 2 - 3) / geom.stride + 1;
        let (mut y, mut ey) = (
            Tensor::zeros([2, 5, oh, ow]),
            emu(&Tensor::zeros([2, 5, oh, ow])),
        );
        conv2d_forward(&mut y, &x, &w, geom).unwrap();
        conv2d_forward(&mut ey, &ex, &ew, geom).unwrap();
        assert_close("conv2d forward", &ey.to_vec(), &y.to_vec(), sum_tol(27));
        let dy = cpu(y.dims(), 15);
        let edy = emu(&dy);
        let (mut dx, mut edx) = (Tensor::zeros(x.dims()), emu(&Tensor::zeros(x.dims())));
        conv2d_backward_data(&mut dx, &dy, &w, geom).unwrap();
        conv2d_backward_data(&mut edx, &edy, &ew, geom).unwrap();
        assert_close(
            "conv2d backward data",
            &edx.to_vec(),
            &dx.to_vec(),
            sum_tol(45),
        );
        // Accumulated into a non-zero start on both devices.
        let (mut dw, mut edw) = (w.clone(), ew.clone());
        conv2d_backward_weight(&mut dw, &dy, &x, geom).unwrap();
        conv2d_backward_weight(&mut edw, &edy, &ex, geom).unwrap();
        let terms = 2 * oh * ow;
        assert_close(
            "conv2d backward weight",
            &edw.to_vec(),
            &dw.to_vec(),
            sum_tol(terms),
        );
    }

    let (a, b) = (cpu(&[4, 9], 16), cpu(&[7, 9], 17));
    let (mut c, mut ec) = (cpu(&[4, 7], 18), emu(&cpu(&[4, 7], 18)));
    matmul(0.5, &a, Trans::No, &b, Trans::Yes, 1.0, &mut c).unwrap();
    matmul(0.5, &emu(&a), Trans::No, &emu(&b), Trans::Yes, 1.0, &mut ec).unwrap();
    assert_close("matmul", &ec.to_vec(), &c.to_vec(), sum_tol(9));
    let e = matmul(1.0, &a, Trans::No, &emu(&b), Trans::Yes, 0.0, &mut ec).unwrap_err();
    assert_eq!(
        e.to_string(),
        "matmul: b is on cuda-emu, the other tensors on cpu"
    );
}

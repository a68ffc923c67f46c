//! Conv2d against a naive direct convolution, on odd shapes, and across thread counts.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::*;

/// The passes sum at most a few hundred products of values in [-1, 1] in f32; the reference sums
/// in f64. Rounding stays below 1e-5 there; a wrong index or a missed tap costs O(0.1).
const ATOL: f32 = 1e-4;

/// The three passes computed straight from their definitions, in f64:
/// y[n,k,oy,ox] = sum_{c,ky,kx} x[n,c,iy,ix] w[k,c,ky,kx] with iy = oy s + ky - p, ix = ox s + kx - p,
/// dx[n,c,iy,ix] = sum dy[n,k,oy,ox] w[k,c,ky,kx] over the same index sets,
/// dw[k,c,ky,kx] = sum_{n,oy,ox} dy[n,k,oy,ox] x[n,c,iy,ix].
struct Naive {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
}

fn naive(x: &[f32], w: &[f32], dy: &[f32], d: &Conv2dDims) -> Naive {
    let mut y = vec![0f64; d.n * d.k * d.oh * d.ow];
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    for n in 0..d.n {
        for k in 0..d.k {
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let yi = ((n * d.k + k) * d.oh + oy) * d.ow + ox;
                    for c in 0..d.c {
                        for ky in 0..d.kh {
                            for kx in 0..d.kw {
                                let iy = (oy * d.stride + ky) as isize - d.pad as isize;
                                let ix = (ox * d.stride + kx) as isize - d.pad as isize;
                                if iy < 0 || ix < 0 || iy >= d.h as isize || ix >= d.w as isize {
                                    continue;
                                }
                                let xi = ((n * d.c + c) * d.h + iy as usize) * d.w + ix as usize;
                                let wi = ((k * d.c + c) * d.kh + ky) * d.kw + kx;
                                y[yi] += x[xi] as f64 * w[wi] as f64;
                                dx[xi] += dy[yi] as f64 * w[wi] as f64;
                                dw[wi] += dy[yi] as f64 * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect();
    Naive {
        y: f(y),
        dx: f(dx),
        dw: f(dw),
    }
}

pub(super) fn random(dims: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
    let len = dims.iter().product();
    Tensor::from_vec(
        dims,
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
    )
    .unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| (got[i] - want[i]).abs() > ATOL) {
        panic!(
            "{what}: first bad index {i}: got {}, want {}",
            got[i], want[i]
        );
    }
}

/// Runs the three passes through [`Conv2dAlgo::choose`]; dweight starts from `dw0` and
/// accumulates.
fn passes(x: &Tensor, w: &Tensor, dy: &Tensor, dw0: &Tensor, geom: Conv2dGeom) -> [Tensor; 3] {
    let d = Conv2dDims::new("test", x.dims(), w.dims(), geom).unwrap();
    let mut y = Tensor::full(d.y_dims(), f32::NAN);
    conv2d_forward(&mut y, x, w, geom).unwrap();
    let mut dx = Tensor::full(d.x_dims(), f32::NAN);
    conv2d_backward_data(&mut dx, dy, w, geom).unwrap();
    let mut dw = dw0.clone();
    conv2d_backward_weight(&mut dw, dy, x, geom).unwrap();
    [y, dx, dw]
}

#[test]
fn all_passes_match_the_direct_convolution_on_odd_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (n, c, k, h, w) = (2, 3, 5, 7, 9);
    let mut checked = 0;
    for (kh, kw) in [(1, 1), (3, 3), (5, 5), (3, 5)] {
        for stride in [1, 2, 3] {
            for pad in [0, 1, 2] {
                let geom = Conv2dGeom { stride, pad };
                let x = random(&[n, c, h, w], &mut rng);
                let wt = random(&[k, c, kh, kw], &mut rng);
                let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
                let dy = random(&d.y_dims(), &mut rng);
                let dw0 = random(&d.weight_dims(), &mut rng);
                let [y, dx, dw] = passes(&x, &wt, &dy, &dw0, geom);
                let want = naive(
                    x.as_slice().unwrap(),
                    wt.as_slice().unwrap(),
                    dy.as_slice().unwrap(),
                    &d,
                );
                let dw_want: Vec<f32> = dw0
                    .as_slice()
                    .unwrap()
                    .iter()
                    .zip(&want.dw)
                    .map(|(a, b)| a + b)
                    .collect();
                let case = format!("kernel {kh}x{kw} stride {stride} pad {pad}");
                assert_close(&format!("{case}: y"), y.as_slice().unwrap(), &want.y);
                assert_close(&format!("{case}: dx"), dx.as_slice().unwrap(), &want.dx);
                assert_close(
                    &format!("{case}: dweight"),
                    dw.as_slice().unwrap(),
                    &dw_want,
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn many_small_images_are_grouped() {
    // 3x3 maps (or 2x2 with stride 2) have few pixels, so every pass multiplies groups of images
    // at once; 61 images leave a last, smaller group.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for geom in [Conv2dGeom::SAME_3X3, Conv2dGeom { stride: 2, pad: 1 }] {
        let x = random(&[61, 2, 3, 3], &mut rng);
        let wt = random(&[3, 2, 3, 3], &mut rng);
        let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
        let dy = random(&d.y_dims(), &mut rng);
        let dw0 = Tensor::zeros(d.weight_dims());
        let [y, dx, dw] = passes(&x, &wt, &dy, &dw0, geom);
        let want = naive(
            x.as_slice().unwrap(),
            wt.as_slice().unwrap(),
            dy.as_slice().unwrap(),
            &d,
        );
        assert_close("y", y.as_slice().unwrap(), &want.y);
        assert_close("dx", dx.as_slice().unwrap(), &want.dx);
        // 61 * 9 products per weight: allow for their rounding.
        let dw = dw.as_slice().unwrap();
        if let Some(i) = (0..dw.len()).find(|&i| (dw[i] - want.dw[i]).abs() > 4.0 * ATOL) {
            panic!(
                "{geom:?}: dweight: first bad index {i}: got {}, want {}",
                dw[i], want.dw[i]
            );
        }
    }
}

#[test]
fn threads_do_not_change_any_pass() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Big enough for the GEMM of backward-weight to be split between threads; stride 2 as well.
    for geom in [Conv2dGeom::SAME_3X3, Conv2dGeom { stride: 2, pad: 2 }] {
        let x = random(&[5, 16, 20, 20], &mut rng);
        let wt = random(&[24, 16, 3, 3], &mut rng);
        let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
        let dy = random(&d.y_dims(), &mut rng);
        let dw0 = random(&d.weight_dims(), &mut rng);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| passes(&x, &wt, &dy, &dw0, geom))
        };
        let one = run(1);
        for threads in [2, 3] {
            let other = run(threads);
            for (name, a, b) in [
                ("y", &one[0], &other[0]),
                ("dx", &one[1], &other[1]),
                ("dweight", &one[2], &other[2]),
            ] {
                assert!(
                    a == b,
                    "{geom:?}: {name} differs between 1 and {threads} threads"
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_op_and_shapes() {
    let geom = Conv2dGeom::SAME_3X3;
    let x = Tensor::zeros([2, 3, 8, 8]);
    let w = Tensor::zeros([4, 3, 3, 3]);
    let mut y = Tensor::zeros([2, 4, 8, 8]);
    let w4 = Tensor::zeros([4, 4, 3, 3]);
    let e = conv2d_forward(&mut y, &x, &w4, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_forward: x (2, 3, 8, 8) has 3 channels, weight (4, 4, 3, 3) expects 4"
    );
    let mut y_small = Tensor::zeros([2, 4, 7, 8]);
    let e = conv2d_forward(&mut y_small, &x, &w, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_forward: y has shape (2, 4, 7, 8), expected (2, 4, 8, 8)"
    );
    let e = conv2d_forward(&mut y, &x, &w, Conv2dGeom { stride: 0, pad: 1 }).unwrap_err();
    assert_eq!(e.to_string(), "conv2d_forward: stride 0");
    let big = Tensor::zeros([4, 3, 11, 3]);
    let e = conv2d_forward(&mut y, &x, &big, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_forward: weight (4, 3, 11, 3): kernel 11x3 is larger than x (2, 3, 8, 8) padded by 1"
    );
    let flat = Tensor::zeros([2, 192]);
    let e = conv2d_forward(&mut y, &flat, &w, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_forward: x (2, 192) and weight (4, 3, 3, 3) must both be rank 4"
    );
    let mut dx = Tensor::zeros([2, 3, 8, 8]);
    let e = conv2d_backward_data(&mut dx, &Tensor::zeros([2, 5, 8, 8]), &w, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_backward_data: dy has shape (2, 5, 8, 8), expected (2, 4, 8, 8)"
    );
    let mut dw = Tensor::zeros([4, 3, 3, 3]);
    let e = conv2d_backward_weight(&mut dw, &y, &Tensor::zeros([3, 3, 8, 8]), geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_backward_weight: dy has shape (2, 4, 8, 8), expected (3, 4, 8, 8)"
    );
}

#[test]
fn dims_give_output_size_and_flops() {
    let d = Conv2dDims::new(
        "test",
        &[32, 128, 32, 32],
        &[128, 128, 3, 3],
        Conv2dGeom::SAME_3X3,
    )
    .unwrap();
    assert_eq!(d.y_dims(), [32, 128, 32, 32]);
    assert_eq!(d.flops(), 2 * 32 * 128 * 128 * 9 * 32 * 32);
    let d = Conv2dDims::new(
        "test",
        &[1, 1, 7, 9],
        &[1, 1, 3, 3],
        Conv2dGeom { stride: 2, pad: 0 },
    )
    .unwrap();
    assert_eq!(d.y_dims(), [1, 1, 3, 4]);
}

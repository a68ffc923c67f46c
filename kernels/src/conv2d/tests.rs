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

fn random(dims: &[usize], rng: &mut ChaCha8Rng) -> Tensor {
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

/// Runs the three passes; dweight starts from `dw0` and accumulates.
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

/// Winograd against the direct path: the transforms add and subtract up to 16 values of the
/// input, kernel and tile (and halve), so each output carries a few more f32 roundings of its
/// largest terms than a straight dot product: looser than the direct path's agreement with the
/// f64 reference, scaled by the magnitude of what is summed.
const WINOGRAD_ATOL: f32 = 1e-5;
const WINOGRAD_RTOL: f32 = 1e-4;

fn assert_close_scaled(what: &str, got: &[f32], want: &[f32], scale: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let tol = |w: f32| scale * WINOGRAD_ATOL + WINOGRAD_RTOL * w.abs();
    if let Some(i) = (0..got.len()).find(|&i| (got[i] - want[i]).abs() > tol(want[i])) {
        panic!(
            "{what}: first bad index {i}: got {}, want {} (tolerance {})",
            got[i],
            want[i],
            tol(want[i])
        );
    }
}

#[test]
fn winograd_matches_the_direct_path_on_odd_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let geom = Conv2dGeom::SAME_3X3;
    // Odd and even sides (partial tiles on the bottom and right), 1x1 maps, many small images
    // (grouped), and enough channels and images for backward-weight's sums to be long.
    for &(n, c, k, h, w) in &[
        (2, 3, 5, 7, 9),
        (1, 1, 1, 1, 1),
        (3, 2, 4, 1, 6),
        (4, 6, 3, 5, 2),
        (37, 5, 7, 4, 4),
        (3, 64, 48, 10, 13),
        // 36 tiles per image: two groups of images (57 and 13).
        (70, 2, 3, 12, 12),
    ] {
        let x = random(&[n, c, h, w], &mut rng);
        let wt = random(&[k, c, 3, 3], &mut rng);
        let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
        assert_eq!(Conv2dAlgo::choose(&d), Conv2dAlgo::Winograd);
        let dy = random(&d.y_dims(), &mut rng);
        let dw0 = random(&d.weight_dims(), &mut rng);
        let run = |algo: Conv2dAlgo| {
            let mut y = Tensor::full(d.y_dims(), f32::NAN);
            conv2d_forward_using(Some(algo), &mut y, &x, &wt, geom).unwrap();
            let mut dx = Tensor::full(d.x_dims(), f32::NAN);
            conv2d_backward_data_using(Some(algo), &mut dx, &dy, &wt, geom).unwrap();
            let mut dw = dw0.clone();
            conv2d_backward_weight_using(Some(algo), &mut dw, &dy, &x, geom).unwrap();
            [y, dx, dw].map(|t| t.to_vec())
        };
        let [y, dx, dw] = run(Conv2dAlgo::Winograd);
        let [y0, dx0, dw0] = run(Conv2dAlgo::Direct);
        let case = format!("({n}, {c}, {h}, {w}) by ({k}, {c}, 3, 3)");
        // Values are in [-1, 1]: a forward or backward-data output sums up to 9 C (or 9 K)
        // products of magnitude <= 1, a weight gradient up to N H W of them.
        assert_close_scaled(&format!("{case}: y"), &y, &y0, (9 * c) as f32);
        assert_close_scaled(&format!("{case}: dx"), &dx, &dx0, (9 * k) as f32);
        assert_close_scaled(&format!("{case}: dweight"), &dw, &dw0, (n * h * w) as f32);
    }
}

#[test]
fn winograd_refuses_other_geometries() {
    let x = Tensor::zeros([1, 2, 6, 6]);
    let w = Tensor::zeros([3, 2, 3, 3]);
    let geom = Conv2dGeom { stride: 2, pad: 1 };
    let d = Conv2dDims::new("test", x.dims(), w.dims(), geom).unwrap();
    assert_eq!(Conv2dAlgo::choose(&d), Conv2dAlgo::Direct);
    let mut y = Tensor::zeros(d.y_dims());
    let e = conv2d_forward_using(Some(Conv2dAlgo::Winograd), &mut y, &x, &w, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_forward: Winograd F(2x2, 3x3) needs a 3x3 kernel, stride 1 and pad 1, not 3x3, \
         stride 2, pad 1"
    );
    let w5 = Tensor::zeros([3, 2, 5, 5]);
    let mut dw = w5.clone();
    let e = conv2d_backward_weight_using(
        Some(Conv2dAlgo::Winograd),
        &mut dw,
        &Tensor::zeros([1, 3, 4, 4]),
        &x,
        Conv2dGeom::SAME_3X3,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("conv2d_backward_weight: Winograd"),
        "{e}"
    );
}

#[test]
fn winograd_threads_do_not_change_any_pass() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let geom = Conv2dGeom::SAME_3X3;
    // Large enough for every GEMM to be split between threads; 70 images make two groups.
    for dims in [[9, 40, 12, 12], [70, 8, 12, 11]] {
        let x = random(&dims, &mut rng);
        let wt = random(&[72, dims[1], 3, 3], &mut rng);
        let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
        assert_eq!(Conv2dAlgo::choose(&d), Conv2dAlgo::Winograd);
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
                    "{dims:?}: {name} differs between 1 and {threads} threads"
                );
            }
        }
    }
}

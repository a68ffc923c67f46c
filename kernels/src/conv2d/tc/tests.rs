//! The tensor-core convolution passes against an f64 reference of operands rounded as the kernels
//! round them, on the emulated device and a real one: padding, strides, a 1x1 kernel, channel
//! counts that leave the rows unaligned, a seed-like 3x3 layer, both tiles (which must agree bit
//! for bit), and backward-weight's split pixel sum.

use super::*;
use crate::cuda::emu::Emu;
use crate::cuda::parity::{on_emu_and_gpu, uniform};
use crate::precision::{bf16_round, tf32_round, to_bf16, Bf16};

/// Calls `f(x index, weight index, y index)` for every (output pixel, tap) pair of `d` whose tap
/// reads an input pixel (not the padding): the products every pass sums.
fn for_each_product(d: &Conv2dDims, mut f: impl FnMut(usize, usize, usize)) {
    for img in 0..d.n {
        for k in 0..d.k {
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let yi = ((img * d.k + k) * d.oh + oy) * d.ow + ox;
                    for c in 0..d.c {
                        for ky in 0..d.kh {
                            for kx in 0..d.kw {
                                let (iy, ix) = (oy * d.stride + ky, ox * d.stride + kx);
                                if iy < d.pad
                                    || ix < d.pad
                                    || iy - d.pad >= d.h
                                    || ix - d.pad >= d.w
                                {
                                    continue;
                                }
                                let xi = ((img * d.c + c) * d.h + iy - d.pad) * d.w + ix - d.pad;
                                f(xi, ((k * d.c + c) * d.kh + ky) * d.kw + kx, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An output of `len` values in f64 summed by `f` (given the output and the magnitude vectors),
/// and per output the sum of the magnitudes of its terms.
fn sums(len: usize, f: impl FnOnce(&mut [f64], &mut [f64])) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut magnitude) = (vec![0.0; len], vec![0.0; len]);
    f(&mut out, &mut magnitude);
    (out, magnitude)
}

/// y, and per y the sum of |x w| over its taps.
fn forward_reference(x: &[f32], w: &[f32], d: &Conv2dDims) -> (Vec<f64>, Vec<f64>) {
    sums(d.y_dims().iter().product(), |y, m| {
        for_each_product(d, |xi, wi, yi| {
            let p = f64::from(x[xi]) * f64::from(w[wi]);
            y[yi] += p;
            m[yi] += p.abs();
        })
    })
}

/// dx, and per dx the sum of |w dy| over its terms.
fn backward_data_reference(dy: &[f32], w: &[f32], d: &Conv2dDims) -> (Vec<f64>, Vec<f64>) {
    sums(d.x_dims().iter().product(), |dx, m| {
        for_each_product(d, |xi, wi, yi| {
            let p = f64::from(w[wi]) * f64::from(dy[yi]);
            dx[xi] += p;
            m[xi] += p.abs();
        })
    })
}

/// dweight0 + dweight, and per value |dweight0| + the sum of |dy x| over its terms.
fn backward_weight_reference(
    dweight0: &[f32],
    dy: &[f32],
    x: &[f32],
    d: &Conv2dDims,
) -> (Vec<f64>, Vec<f64>) {
    sums(dweight0.len(), |dw, m| {
        for (i, &v) in dweight0.iter().enumerate() {
            dw[i] = f64::from(v);
            m[i] = f64::from(v).abs();
        }
        for_each_product(d, |xi, wi, yi| {
            let p = f64::from(dy[yi]) * f64::from(x[xi]);
            dw[wi] += p;
            m[wi] += p.abs();
        })
    })
}

/// (x dims, weight dims, stride, pad): 3x3 SAME on 3 channels (27 taps: the weight's rows and
/// every im2col element unaligned); stride 2 with K past 64 (two row blocks of the small tile) and
/// 72 taps (more than one TF32 step); a 1x1 kernel without padding; a seed-like 3x3 SAME layer
/// (16 to 32 channels on 8 x 8, a multiple of the chunks everywhere).
const CASES: [([usize; 4], [usize; 4], usize, usize); 4] = [
    ([2, 3, 7, 9], [5, 3, 3, 3], 1, 1),
    ([1, 8, 10, 6], [70, 8, 3, 3], 2, 1),
    ([2, 16, 5, 5], [8, 16, 1, 1], 1, 0),
    ([2, 16, 8, 8], [32, 16, 3, 3], 1, 1),
];

/// A pass of the tests: runs the kernel in `tile` on the case's rounded-operand inputs and returns
/// its output; `want` is the reference output and per value the sum of its terms' magnitudes, and
/// `terms` the most terms one output sums.
struct Pass<'a> {
    name: &'a str,
    want: (Vec<f64>, Vec<f64>),
    terms: usize,
}

impl Pass<'_> {
    /// Checks `got` against the reference. Each kernel adds its terms' exact products (of the
    /// rounded operands) in FP32: by Higham's bound for summation in any order, |got - exact| <=
    /// (terms - 1) u sum |term| with u = 2^-24, doubled for an adder that may truncate on a GPU.
    fn check(&self, case: usize, tile: GemmTile, got: &[f32]) {
        let (want, magnitude) = &self.want;
        let u = f64::from(f32::EPSILON) / 2.0;
        for (j, (&g, &e)) in got.iter().zip(want).enumerate() {
            let bound = 2.0 * self.terms as f64 * u * magnitude[j];
            assert!(
                (f64::from(g) - e).abs() <= bound,
                "{} case {case} {tile:?}: first mismatch at index {j}: gpu {g:e}, want {e:e} (bound {bound:e})",
                self.name
            );
        }
    }
}

/// The tiles a case runs in: only the first case in the large tile (four times the emulator's
/// time of the small one).
fn tiles(case: usize) -> &'static [GemmTile] {
    if case == 0 {
        &GemmTile::ALL[..]
    } else {
        &GemmTile::ALL[1..]
    }
}

/// Asserts that the outputs of the tiles a case ran in agree bit for bit.
fn tiles_agree(name: &str, case: usize, per_tile: &[Vec<f32>]) {
    if let [large, small] = per_tile {
        assert!(
            large
                .iter()
                .zip(small)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} case {case}: the 128 and 64 tiles differ"
        );
    }
}

fn matches_reference<B: Backend, T: TcElem>(
    dev: &B,
    to_t: fn(&[f32]) -> Vec<T>,
    round: fn(f32) -> f32,
) {
    let rounded = |v: &[f32]| v.iter().map(|&v| round(v)).collect::<Vec<f32>>();
    for (i, &(xd, wd, stride, pad)) in CASES.iter().enumerate() {
        let geom = Conv2dGeom { stride, pad };
        let d = Conv2dDims::new("test", &xd, &wd, geom).unwrap();
        let x = uniform(50 + i as u64, xd.iter().product(), -1.0, 1.0);
        let w = uniform(60 + i as u64, wd.iter().product(), -1.0, 1.0);
        let dy = uniform(70 + i as u64, d.y_dims().iter().product(), -1.0, 1.0);
        let dweight0 = uniform(80 + i as u64, w.len(), -1.0, 1.0);
        let (xr, wr, dyr) = (rounded(&x), rounded(&w), rounded(&dy));
        let (xb, wb, dyb) = (
            dev.upload(&to_t(&x)).unwrap(),
            dev.upload(&to_t(&w)).unwrap(),
            dev.upload(&to_t(&dy)).unwrap(),
        );
        let pixels = d.n * d.oh * d.ow;
        let passes = [
            Pass {
                name: "forward",
                want: forward_reference(&xr, &wr, &d),
                terms: d.c * d.kh * d.kw,
            },
            Pass {
                name: "backward-data",
                want: backward_data_reference(&dyr, &wr, &d),
                terms: d.k * d.kh * d.kw,
            },
            Pass {
                name: "backward-weight",
                want: backward_weight_reference(&dweight0, &dyr, &xr, &d),
                terms: pixels + 1,
            },
        ];
        for (which, pass) in passes.iter().enumerate() {
            let mut per_tile = Vec::new();
            for &tile in tiles(i) {
                let got = match which {
                    0 => {
                        let mut y = dev.upload(&vec![f32::NAN; pass.want.0.len()]).unwrap();
                        conv2d_forward_tc(dev, Some(tile), &mut y, &xb, &wb, &xd, &wd, geom)
                            .unwrap();
                        dev.download(&y).unwrap()
                    }
                    1 => {
                        let mut dx = dev.upload(&vec![f32::NAN; x.len()]).unwrap();
                        conv2d_backward_data_tc(
                            dev,
                            Some(tile),
                            &mut dx,
                            &dyb,
                            &wb,
                            &xd,
                            &wd,
                            geom,
                        )
                        .unwrap();
                        dev.download(&dx).unwrap()
                    }
                    _ => {
                        // The first case's 126 pixels in two slices (of 64, or 42 rounded up
                        // to a TF32 step), the others in one.
                        let splits = if i == 0 { 3 } else { 1 };
                        let mut dw = dev.upload(&dweight0).unwrap();
                        let plan = Some((tile, splits));
                        conv2d_backward_weight_tc(dev, plan, &mut dw, &dyb, &xb, &xd, &wd, geom)
                            .unwrap();
                        dev.download(&dw).unwrap()
                    }
                };
                pass.check(i, tile, &got);
                per_tile.push(got);
            }
            tiles_agree(pass.name, i, &per_tile);
        }
    }
}

fn tf32_matches_reference<B: Backend>(dev: &B) {
    matches_reference::<_, f32>(dev, |x| x.to_vec(), tf32_round);
}

fn bf16_matches_reference<B: Backend>(dev: &B) {
    matches_reference::<_, Bf16>(dev, to_bf16, bf16_round);
}

on_emu_and_gpu!(
    emu_conv2d_tc_tf32_matches_reference,
    gpu_conv2d_tc_tf32_matches_reference,
    tf32_matches_reference
);
on_emu_and_gpu!(
    emu_conv2d_tc_bf16_matches_reference,
    gpu_conv2d_tc_bf16_matches_reference,
    bf16_matches_reference
);

#[test]
fn emu_conv2d_forward_tc_refuses_bad_buffers() {
    let dev = Emu;
    let (x, w) = (
        dev.alloc::<f32>(2 * 3 * 4 * 4).unwrap(),
        dev.alloc::<f32>(5 * 3 * 9).unwrap(),
    );
    let mut y = dev.alloc::<f32>(7).unwrap();
    let e = conv2d_forward_tc(
        &dev,
        None,
        &mut y,
        &x,
        &w,
        &[2, 3, 4, 4],
        &[5, 3, 3, 3],
        Conv2dGeom::SAME_3X3,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda conv2d_forward_tc: y holds 7 values, expected 160"
    );
    let e = conv2d_forward_tc(
        &dev,
        None,
        &mut y,
        &x,
        &w,
        &[2, 3, 4, 4],
        &[5, 4, 3, 3],
        Conv2dGeom::SAME_3X3,
    );
    assert!(e.unwrap_err().to_string().contains("channels"));
}

/// The precision entry points of conv2d and matmul run exactly the tensor-core kernels on the
/// emulated device (bit for bit what this module's functions give on BF16 copies or TF32-rounded
/// FP32), and refuse TF32 and BF16 on the CPU, naming the op and the mode.
#[test]
fn emu_precision_entry_points_run_the_tensor_core_kernels() {
    use crate::conv2d::{conv2d_backward_weight_in, conv2d_forward_in};
    use crate::cuda::to_device;
    use crate::gemm::{matmul_in, Trans};
    use crate::precision::Precision;
    use tensor_core::{Device, Tensor};

    let dev = Emu;
    let (xd, wd, geom) = ([2, 3, 7, 9], [5, 3, 3, 3], Conv2dGeom::SAME_3X3);
    let d = Conv2dDims::new("test", &xd, &wd, geom).unwrap();
    let (x, w) = (
        uniform(1, 2 * 3 * 7 * 9, -1.0, 1.0),
        uniform(2, 5 * 27, -1.0, 1.0),
    );
    let dy = uniform(3, d.y_dims().iter().product(), -1.0, 1.0);
    let on_emu = |v: &[f32], dims: &[usize]| {
        to_device(
            &Tensor::from_vec(dims, v.to_vec()).unwrap(),
            Device::CudaEmu,
        )
        .unwrap()
    };
    let (xt, wt, dyt) = (on_emu(&x, &xd), on_emu(&w, &wd), on_emu(&dy, &d.y_dims()));
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();

    let mut y = on_emu(&vec![0.0; dy.len()], &d.y_dims());
    conv2d_forward_in(Precision::Tf32, None, &mut y, &xt, &wt, geom).unwrap();
    let mut want = dev.alloc::<f32>(dy.len()).unwrap();
    let (xb, wb) = (dev.upload(&x).unwrap(), dev.upload(&w).unwrap());
    conv2d_forward_tc(&dev, None, &mut want, &xb, &wb, &xd, &wd, geom).unwrap();
    assert_eq!(
        bits(y.try_to_vec().unwrap()),
        bits(dev.download(&want).unwrap())
    );

    let mut dw = on_emu(&vec![0.5; w.len()], &wd);
    conv2d_backward_weight_in(Precision::Bf16, None, &mut dw, &dyt, &xt, geom).unwrap();
    let mut want = dev.upload(&vec![0.5; w.len()]).unwrap();
    let (dyh, xh) = (
        dev.upload(&to_bf16(&dy)).unwrap(),
        dev.upload(&to_bf16(&x)).unwrap(),
    );
    conv2d_backward_weight_tc(&dev, None, &mut want, &dyh, &xh, &xd, &wd, geom).unwrap();
    assert_eq!(
        bits(dw.try_to_vec().unwrap()),
        bits(dev.download(&want).unwrap())
    );

    // matmul: c (5, 5) = w (5, 27) w^T in BF16, against the rounded operands' f64 product.
    let wm = on_emu(&w, &[5, 27]);
    let mut c = on_emu(&[0.0; 25], &[5, 5]);
    matmul_in(
        Precision::Bf16,
        1.0,
        &wm,
        Trans::No,
        &wm,
        Trans::Yes,
        0.0,
        &mut c,
    )
    .unwrap();
    let wr: Vec<f64> = w.iter().map(|&v| f64::from(bf16_round(v))).collect();
    for (i, &got) in c.try_to_vec().unwrap().iter().enumerate() {
        let (r, s) = (i / 5, i % 5);
        let (mut want, mut magnitude) = (0.0, 0.0);
        for k in 0..27 {
            want += wr[r * 27 + k] * wr[s * 27 + k];
            magnitude += (wr[r * 27 + k] * wr[s * 27 + k]).abs();
        }
        // As Pass::check: 27 exact products summed in FP32, twice Higham's bound.
        let bound = 2.0 * 27.0 * f64::from(f32::EPSILON) / 2.0 * magnitude;
        assert!(
            (f64::from(got) - want).abs() <= bound,
            "matmul bf16 at {i}: {got} vs {want}"
        );
    }

    let cpu = |v: &[f32], dims: &[usize]| Tensor::from_vec(dims, v.to_vec()).unwrap();
    let mut y = Tensor::zeros(d.y_dims());
    let e = conv2d_forward_in(
        Precision::Tf32,
        None,
        &mut y,
        &cpu(&x, &xd),
        &cpu(&w, &wd),
        geom,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "conv2d_forward: precision tf32: the CPU has no TF32 arithmetic"
    );
    let wm = cpu(&w, &[5, 27]);
    let mut c = Tensor::zeros([5, 5]);
    let e = matmul_in(
        Precision::Bf16,
        1.0,
        &wm,
        Trans::No,
        &wm,
        Trans::Yes,
        0.0,
        &mut c,
    );
    // BF16 on the CPU: where it has AVX-512 BF16, the FP32 GEMM on rounded operands (the
    // product above, to the same bound); elsewhere refused, naming what is missing.
    if crate::conv2d::bf16_available() {
        e.unwrap();
        for (i, &got) in c.try_to_vec().unwrap().iter().enumerate() {
            let (r, s) = (i / 5, i % 5);
            let want: f64 = (0..27).map(|k| wr[r * 27 + k] * wr[s * 27 + k]).sum();
            let magnitude: f64 = (0..27)
                .map(|k| (wr[r * 27 + k] * wr[s * 27 + k]).abs())
                .sum();
            let bound = 27.0 * f64::from(f32::EPSILON) * magnitude;
            assert!((f64::from(got) - want).abs() <= bound, "cpu bf16 at {i}");
        }
    } else {
        let e = e.unwrap_err().to_string();
        assert!(e.contains("bf16 on the CPU needs AVX-512 BF16"), "{e}");
    }
}

//! The tensor-core convolution forward against an f64 reference of operands rounded as the kernel
//! rounds them, on the emulated device and a real one: padding, strides, a 1x1 kernel, channel
//! counts that leave the weight's rows unaligned, both tiles (which must agree bit for bit).

use super::*;
use crate::cuda::emu::Emu;
use crate::cuda::parity::{on_emu_and_gpu, uniform};
use crate::precision::{bf16_round, tf32_round, to_bf16, Bf16};

/// y in f64 of rounded x and weight, and per output the sum of |x w| over its taps.
fn reference(x: &[f32], w: &[f32], d: &Conv2dDims) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; d.y_dims().iter().product()];
    let mut magnitude = y.clone();
    for img in 0..d.n {
        for k in 0..d.k {
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let out = ((img * d.k + k) * d.oh + oy) * d.ow + ox;
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
                                let xv = x[((img * d.c + c) * d.h + iy - d.pad) * d.w + ix - d.pad];
                                let p = f64::from(xv)
                                    * f64::from(w[((k * d.c + c) * d.kh + ky) * d.kw + kx]);
                                y[out] += p;
                                magnitude[out] += p.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (y, magnitude)
}

/// (x dims, weight dims, stride, pad): 3x3 SAME on 3 channels (27 taps: the weight's rows and
/// every im2col element unaligned); stride 2 with K past 64 (two row blocks of the small tile) and
/// 72 taps (more than one TF32 step); a 1x1 kernel without padding.
const CASES: [([usize; 4], [usize; 4], usize, usize); 3] = [
    ([2, 3, 7, 9], [5, 3, 3, 3], 1, 1),
    ([1, 8, 10, 6], [70, 8, 3, 3], 2, 1),
    ([2, 16, 5, 5], [8, 16, 1, 1], 1, 0),
];

fn matches_reference<B: Backend, T: TcElem>(
    dev: &B,
    to_t: fn(&[f32]) -> Vec<T>,
    round: fn(f32) -> f32,
) {
    for (i, &(xd, wd, stride, pad)) in CASES.iter().enumerate() {
        let geom = Conv2dGeom { stride, pad };
        let d = Conv2dDims::new("test", &xd, &wd, geom).unwrap();
        let x = uniform(50 + i as u64, xd.iter().product(), -1.0, 1.0);
        let w = uniform(60 + i as u64, wd.iter().product(), -1.0, 1.0);
        let xr: Vec<f32> = x.iter().map(|&v| round(v)).collect();
        let wr: Vec<f32> = w.iter().map(|&v| round(v)).collect();
        let (want, magnitude) = reference(&xr, &wr, &d);
        let (xb, wb) = (
            dev.upload(&to_t(&x)).unwrap(),
            dev.upload(&to_t(&w)).unwrap(),
        );
        let taps = d.c * d.kh * d.kw;
        // Only the first case in the large tile (four times the emulator's time of the small one).
        let tiles = if i == 0 {
            &GemmTile::ALL[..]
        } else {
            &GemmTile::ALL[1..]
        };
        let mut per_tile = Vec::new();
        for &tile in tiles {
            let mut y = dev.upload(&vec![f32::NAN; want.len()]).unwrap();
            conv2d_forward_tc(dev, Some(tile), &mut y, &xb, &wb, &xd, &wd, geom).unwrap();
            let got = dev.download(&y).unwrap();
            // The kernel adds the taps' exact products in FP32: by Higham's bound for recursive
            // summation, |y - exact| <= 2 taps u sum |x w| with u = 2^-24 (doubled for an adder
            // that may truncate on a GPU).
            for (j, (&g, &e)) in got.iter().zip(&want).enumerate() {
                let bound = 2.0 * taps as f64 * f64::from(f32::EPSILON) / 2.0 * magnitude[j];
                assert!(
                    (f64::from(g) - e).abs() <= bound,
                    "case {i} {tile:?}: first mismatch at index {j}: gpu {g:e}, want {e:e} (bound {bound:e})"
                );
            }
            per_tile.push(got);
        }
        if let [large, small] = &per_tile[..] {
            assert!(
                large
                    .iter()
                    .zip(small)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {i}: the 128 and 64 tiles differ"
            );
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
    emu_conv2d_forward_tf32_matches_reference,
    gpu_conv2d_forward_tf32_matches_reference,
    tf32_matches_reference
);
on_emu_and_gpu!(
    emu_conv2d_forward_bf16_matches_reference,
    gpu_conv2d_forward_bf16_matches_reference,
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

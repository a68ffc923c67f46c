//! Conv2d: the CPU passes against the emulated implicit-GEMM kernels, on odd shapes over kernel
//! size, stride and padding, on a shape whose GEMMs have partial tiles on every axis, and on a
//! seed layer (128 -> 128 channels, 3x3) at a small batch; each pass in both block tiles, which
//! must agree bit for bit (same sums in the same order).

use super::cuda;
use crate::conv2d::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, Conv2dDims, Conv2dGeom,
};
use crate::cuda::launch::Backend;
use crate::cuda::parity::{assert_close, on_emu_and_gpu, uniform, Tol, EXACT};
use crate::gemm::cuda::GemmTile;
use tensor_core::Tensor;

/// A sum of `terms` products of values in [-1, 1], computed in f32 in different orders on the
/// two sides (and, for 3x3 stride-1 convolutions, by Winograd F(2x2, 3x3) on the CPU, whose
/// transforms add a few roundings per output): bounded by terms * 2^-24 with a margin of 8.
fn conv_tol(terms: usize) -> Tol {
    Tol {
        atol: 8.0 * (terms as f32) * f32::EPSILON / 2.0,
        rtol: 1e-6,
    }
}

on_emu_and_gpu!(
    emu_conv2d_matches_cpu,
    gpu_conv2d_matches_cpu,
    conv2d_matches_cpu
);

fn conv2d_matches_cpu<B: Backend>(dev: &B) {
    // (x dims, filters, kernel size, geometry): every kernel/stride/pad pair on an odd map; 19
    // -> 130 channels (forward: m = 130, n = 429 pixels, k = 171 taps; backward-data: m = 19,
    // k = 1170; backward-weight: m = 130, n = 171, 429 pixels summed), past the 128 x 128 x 8
    // and 64 x 64 x 8 tiles on every axis; then a seed layer.
    let mut cases = Vec::new();
    for k in [3usize, 1] {
        for stride in [1usize, 2] {
            for pad in [0usize, 1] {
                cases.push(([2usize, 3, 7, 9], 5usize, k, Conv2dGeom { stride, pad }));
            }
        }
    }
    cases.push(([3, 19, 11, 13], 130, 3, Conv2dGeom::SAME_3X3));
    cases.push(([2, 128, 8, 8], 128, 3, Conv2dGeom::SAME_3X3));
    for (s, (xd, k_out, ks, geom)) in cases.into_iter().enumerate() {
        let what = format!("x {xd:?}, {k_out} filters {ks}x{ks}, {geom:?}");
        let seed = 400 + 10 * s as u64;
        let wd = [k_out, xd[1], ks, ks];
        let x = Tensor::from_vec(xd, uniform(seed, xd.iter().product(), -1.0, 1.0)).unwrap();
        let w = Tensor::from_vec(wd, uniform(seed + 1, wd.iter().product(), -1.0, 1.0)).unwrap();
        let (xb, wb) = (
            dev.upload(x.as_slice().unwrap()).unwrap(),
            dev.upload(w.as_slice().unwrap()).unwrap(),
        );
        // The CPU's output shape, through its own checks.
        let d = Conv2dDims::new("test", &xd, &wd, geom).unwrap();
        let mut y = Tensor::zeros(d.y_dims());
        conv2d_forward(&mut y, &x, &w, geom).unwrap();
        let fwd_terms = xd[1] * ks * ks;
        // Each tile forced (the automatic choice is one of them: emu_gemm_tile_choice checks
        // which; backward-weight below also runs the automatic path with its split count).
        let mut per_tile = Vec::new();
        for tile in [Some(GemmTile::Large), Some(GemmTile::Small)] {
            let mut yb = dev.upload(&vec![f32::NAN; y.len()]).unwrap();
            cuda::conv2d_forward_with(dev, tile, &mut yb, &xb, &wb, &xd, &wd, geom).unwrap();
            let yg = dev.download(&yb).unwrap();
            let what = format!("{what}: forward, tile {tile:?}");
            assert_close(&what, &yg, y.as_slice().unwrap(), conv_tol(fwd_terms));
            per_tile.push(yg);
        }
        assert_close(
            "forward, large vs small tile",
            &per_tile[0],
            &per_tile[1],
            EXACT,
        );

        let dy = Tensor::from_vec(d.y_dims(), uniform(seed + 2, y.len(), -1.0, 1.0)).unwrap();
        let dyb = dev.upload(dy.as_slice().unwrap()).unwrap();
        let mut dx = Tensor::zeros(xd);
        conv2d_backward_data(&mut dx, &dy, &w, geom).unwrap();
        let mut per_tile = Vec::new();
        for tile in [Some(GemmTile::Large), Some(GemmTile::Small)] {
            let mut dxb = dev.upload(&vec![f32::NAN; dx.len()]).unwrap();
            cuda::conv2d_backward_data_with(dev, tile, &mut dxb, &dyb, &wb, &xd, &wd, geom)
                .unwrap();
            let dxg = dev.download(&dxb).unwrap();
            let what = format!("{what}: backward-data, tile {tile:?}");
            assert_close(
                &what,
                &dxg,
                dx.as_slice().unwrap(),
                conv_tol(k_out * ks * ks),
            );
            per_tile.push(dxg);
        }
        assert_close(
            "backward-data, large vs small tile",
            &per_tile[0],
            &per_tile[1],
            EXACT,
        );

        // Accumulated into a non-zero start: as the op splits it, then in each tile in one slice
        // and in 3 (slices of whole k steps, the last shorter).
        let dw0 = uniform(seed + 3, w.len(), -1.0, 1.0);
        let mut dw = Tensor::from_vec(wd, dw0.clone()).unwrap();
        conv2d_backward_weight(&mut dw, &dy, &x, geom).unwrap();
        let pixels = d.n * d.oh * d.ow;
        let mut per_tile = Vec::new();
        let runs = [None, Some((GemmTile::Large, 1)), Some((GemmTile::Small, 1))]
            .into_iter()
            .chain([Some((GemmTile::Large, 3)), Some((GemmTile::Small, 3))]);
        for run in runs {
            let mut dwb = dev.upload(&dw0).unwrap();
            match run {
                None => cuda::conv2d_backward_weight(dev, &mut dwb, &dyb, &xb, &xd, &wd, geom),
                Some((tile, splits)) => cuda::conv2d_backward_weight_with(
                    dev, tile, splits, &mut dwb, &dyb, &xb, &xd, &wd, geom,
                ),
            }
            .unwrap();
            let dwg = dev.download(&dwb).unwrap();
            let what = format!("{what}: backward-weight, (tile, splits) {run:?}");
            assert_close(&what, &dwg, dw.as_slice().unwrap(), conv_tol(pixels));
            per_tile.push(dwg);
        }
        for (large, small, splits) in [(1, 2, 1), (3, 4, 3)] {
            let what = format!("backward-weight in {splits} slices, large vs small tile");
            assert_close(&what, &per_tile[large], &per_tile[small], EXACT);
        }
    }
    refusals(dev);
}

fn refusals<B: Backend>(dev: &B) {
    let (x, w, mut y) = (
        dev.alloc(2 * 3 * 5 * 5).unwrap(),
        dev.alloc(4 * 3 * 3 * 3).unwrap(),
        dev.alloc(7).unwrap(),
    );
    let geom = Conv2dGeom::SAME_3X3;
    let e = cuda::conv2d_forward(dev, &mut y, &x, &w, &[2, 3, 5, 5], &[4, 3, 3, 3], geom);
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda conv2d_forward: y holds 7 values, expected 200"
    );
    let e = cuda::conv2d_forward(dev, &mut y, &x, &w, &[2, 3, 5, 5], &[4, 2, 3, 3], geom);
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda conv2d_forward: x (2, 3, 5, 5) has 3 channels, weight (4, 2, 3, 3) expects 2"
    );
}

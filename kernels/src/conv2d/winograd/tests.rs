//! Both Winograd variants against the direct path (itself checked against a naive loop in
//! `conv2d/tests.rs`), with error bounds derived from each variant's matrices; thread-count
//! independence; the matrices themselves against the 3x3 correlation they compute.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use super::matrices::Tile;
use super::{F2, F4};
use crate::conv2d::tests::random;
use crate::conv2d::*;

/// The tile of a Winograd algorithm.
fn tile_of(algo: Conv2dAlgo) -> Option<&'static Tile> {
    match algo {
        Conv2dAlgo::Direct | Conv2dAlgo::Sliding => None,
        Conv2dAlgo::Winograd2 => Some(&F2),
        Conv2dAlgo::Winograd4 => Some(&F4),
    }
}

#[test]
fn tiles_compute_the_3x3_correlation() {
    // y_tile = A^T [(G g G^T) . (B^T d B)] A must equal y[a][b] = sum d[a+u][b+v] g[u][v] on one
    // (alpha, alpha) patch, computed in f64 from the f32 matrices: exact but for the rounding of
    // G's sixths and twenty-fourths to f32 (relative 6e-8 each).
    let mut rng = ChaCha8Rng::seed_from_u64(20);
    for tile in [&F2, &F4] {
        let (m, al) = (tile.m, tile.alpha);
        let d: Vec<f64> = (0..al * al).map(|_| rng.random_range(-1.0..1.0)).collect();
        let g: Vec<f64> = (0..9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bt = |i: usize, j: usize| tile.bt[i * al + j] as f64;
        let gm = |i: usize, j: usize| tile.g[i * 3 + j] as f64;
        let at = |i: usize, j: usize| tile.at[i * al + j] as f64;
        let prod = |i: usize, j: usize| {
            let u: f64 = (0..3)
                .flat_map(|a| (0..3).map(move |b| (a, b)))
                .map(|(a, b)| gm(i, a) * g[a * 3 + b] * gm(j, b))
                .sum();
            let v: f64 = (0..al)
                .flat_map(|a| (0..al).map(move |b| (a, b)))
                .map(|(a, b)| bt(i, a) * d[a * al + b] * bt(j, b))
                .sum();
            u * v
        };
        for a in 0..m {
            for b in 0..m {
                let got: f64 = (0..al)
                    .flat_map(|i| (0..al).map(move |j| (i, j)))
                    .map(|(i, j)| at(a, i) * prod(i, j) * at(b, j))
                    .sum();
                let want: f64 = (0..9).map(|t| d[(a + t / 3) * al + b + t % 3] * g[t]).sum();
                assert!(
                    (got - want).abs() < 1e-5,
                    "F({m}x{m}): y[{a}][{b}] = {got}, want {want}"
                );
            }
        }
    }
}

/// The three passes.
#[derive(Debug, Clone, Copy)]
enum Pass {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// sum_j |row_i[j]| of each row i of a (rows, cols) matrix.
fn abs_row_sums(m: &[f32], cols: usize) -> Vec<f64> {
    m.chunks_exact(cols)
        .map(|r| r.iter().map(|v| v.abs() as f64).sum())
        .collect()
}

/// For one output of `pass`: the number r of products its reduction adds, the bound growth^2 on
/// the magnitude of each (for inputs in [-1, 1]), and the number of roundings along its longest
/// chain (the reduction plus the transforms' sums).
///
/// Direct: r = 9 C products (9 K for backward-data, N H W for backward-weight), growth 1.
/// Winograd, forward (backward-data alike with K for C): y[a][b] = sum_ij A^T[a][i] A^T[b][j]
/// sum_c U_ij V_ij with |U_ij| <= gs_i gs_j and |V_ij| <= bs_i bs_j (gs, bs: the rows' absolute
/// sums of G and B^T), so r = C and growth = max_a sum_i |A^T[a][i]| gs_i bs_i: 8 for F(2x2),
/// 48 for F(4x4). Backward-weight: dw[a][b] = sum_ij G[i][a] G[j][b] sum_tiles Z_ij V_ij with
/// |Z_ij| <= as_i as_j (as: the column absolute sums of A^T), so r = N tiles and
/// growth = max_a sum_i |G[i][a]| as_i bs_i.
fn term_bound(algo: Conv2dAlgo, pass: Pass, d: &Conv2dDims) -> (f64, f64, f64) {
    let Some(tile) = tile_of(algo) else {
        let r = match pass {
            Pass::Forward => 9 * d.c,
            Pass::BackwardData => 9 * d.k,
            Pass::BackwardWeight => d.n * d.h * d.w,
        } as f64;
        return (r, 1.0, r);
    };
    let al = tile.alpha;
    let bs = abs_row_sums(tile.bt, al);
    let gs = abs_row_sums(tile.g, 3);
    let col_sums: Vec<f64> = (0..al)
        .map(|i| tile.at_col(i).map(|v| v.abs() as f64).sum())
        .collect();
    let (growth, r) = match pass {
        Pass::Forward | Pass::BackwardData => {
            let growth = (0..tile.m)
                .map(|a| {
                    (0..al)
                        .map(|i| tile.at_row(a)[i].abs() as f64 * gs[i] * bs[i])
                        .sum()
                })
                .fold(0.0f64, f64::max);
            let r = if matches!(pass, Pass::Forward) {
                d.c
            } else {
                d.k
            };
            (growth, r)
        }
        Pass::BackwardWeight => {
            let growth = (0..3)
                .map(|a| {
                    (0..al)
                        .map(|i| tile.g_row(i)[a].abs() as f64 * col_sums[i] * bs[i])
                        .sum()
                })
                .fold(0.0f64, f64::max);
            let tiles = d.h.div_ceil(tile.m) * d.w.div_ceil(tile.m);
            (growth, d.n * tiles)
        }
    };
    // Input and output transforms: alpha + alpha sums each; the weight's: 3 + 3.
    (r as f64, growth * growth, (r + 4 * al + 6) as f64)
}

/// The bound on |algo - direct| for one output of `pass`, u the unit roundoff. Higham's worst
/// case for a chain of n roundings is about n u sum |partial sums|. Independent roundings have
/// random signs and grow like a random walk: sqrt(n) u (his rule of thumb). The r products of the
/// reduction have random signs too (the tests' inputs are independent and centred), so the
/// partial sums being rounded reach about sqrt(r) growth^2, not r growth^2:
///   tol = u sqrt(chain) sqrt(r) growth^2,
/// where growth^2 (all of a transform's terms at +-1 and aligned) keeps a margin. With F(4x4)'s
/// growth of 48 against F(2x2)'s 8, its bound is 36x wider. The direct path's own rounding is
/// added, since it is the reference.
fn tolerance(algo: Conv2dAlgo, pass: Pass, d: &Conv2dDims) -> f64 {
    const U: f64 = f32::EPSILON as f64 / 2.0;
    let bound = |algo| {
        let (r, growth2, chain) = term_bound(algo, pass, d);
        U * chain.sqrt() * r.sqrt() * growth2
    };
    bound(algo) + bound(Conv2dAlgo::Direct)
}

fn assert_within(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let err = |i: usize| (got[i] as f64 - want[i] as f64).abs();
    if let Some(i) = (0..got.len()).find(|&i| err(i).is_nan() || err(i) > tol) {
        panic!(
            "{what}: first bad index {i}: got {}, want {} (tolerance {tol:.3e})",
            got[i], want[i]
        );
    }
}

/// Runs the three passes of `algo`: [y, dx, dweight], dweight accumulated onto `dw0`.
fn run(
    algo: Conv2dAlgo,
    x: &Tensor,
    wt: &Tensor,
    dy: &Tensor,
    dw0: &Tensor,
    d: &Conv2dDims,
) -> [Vec<f32>; 3] {
    let geom = Conv2dGeom::SAME_3X3;
    let mut y = Tensor::full(d.y_dims(), f32::NAN);
    conv2d_forward_using(Some(algo), &mut y, x, wt, geom).unwrap();
    let mut dx = Tensor::full(d.x_dims(), f32::NAN);
    conv2d_backward_data_using(Some(algo), &mut dx, dy, wt, geom).unwrap();
    let mut dw = dw0.clone();
    conv2d_backward_weight_using(Some(algo), &mut dw, dy, x, geom).unwrap();
    [y, dx, dw].map(|t| t.to_vec())
}

/// Every Winograd algorithm against the direct path on x: (n, c, h, w) by (k, c, 3, 3).
fn check_against_direct(&(n, c, k, h, w): &(usize, usize, usize, usize, usize), seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let geom = Conv2dGeom::SAME_3X3;
    let x = random(&[n, c, h, w], &mut rng);
    let wt = random(&[k, c, 3, 3], &mut rng);
    let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
    let dy = random(&d.y_dims(), &mut rng);
    let dw0 = random(&d.weight_dims(), &mut rng);
    let want = run(Conv2dAlgo::Direct, &x, &wt, &dy, &dw0, &d);
    for algo in [Conv2dAlgo::Winograd2, Conv2dAlgo::Winograd4] {
        let got = run(algo, &x, &wt, &dy, &dw0, &d);
        let case = format!("{}: ({n}, {c}, {h}, {w}) by ({k}, {c}, 3, 3)", algo.name());
        for (i, pass) in [Pass::Forward, Pass::BackwardData, Pass::BackwardWeight]
            .into_iter()
            .enumerate()
        {
            let tol = tolerance(algo, pass, &d);
            assert_within(&format!("{case}: {pass:?}"), &got[i], &want[i], tol);
        }
    }
}

#[test]
fn winograd_matches_the_direct_path_on_odd_shapes() {
    // Sides that are and are not multiples of 2 and 4 (partial tiles on the bottom and right),
    // 1x1 and 2x2 maps, many small images, enough channels for long sums, and several groups of
    // images: 3x3 maps have 4 F(2x2) tiles (512 images a group) and 1 F(4x4) tile (256), and
    // groups are whole multiples of 16 images (the transforms' lanes) but for the last: 1100
    // images end in a group of 76 (4 full vectors and one of 12 lanes), 37 make one group whose
    // last vector has 5.
    for (seed, shape) in [
        (2, 3, 5, 7, 9),
        (1, 1, 1, 1, 1),
        (2, 2, 3, 2, 2),
        (3, 2, 4, 1, 6),
        (4, 6, 3, 5, 2),
        (2, 4, 5, 5, 5),
        (3, 3, 2, 7, 7),
        (37, 5, 7, 4, 4),
        (3, 64, 48, 10, 13),
        (70, 2, 3, 12, 12),
        (1100, 2, 3, 3, 3),
    ]
    .iter()
    .enumerate()
    {
        check_against_direct(shape, 30 + seed as u64);
    }
}

#[test]
fn winograd_matches_the_direct_path_on_the_seed_layers() {
    // The seed network's convolutions, (C, K, side): the first 3 -> 128 and one C = K layer of each
    // residual block, with a few images (10 at 32x32: one group, 10 of a vector's 16 lanes).
    for (seed, &(c, k, side, n)) in [
        (3, 128, 32, 2),
        (128, 128, 32, 10),
        (256, 256, 16, 4),
        (512, 512, 8, 4),
        (1024, 1024, 4, 4),
    ]
    .iter()
    .enumerate()
    {
        check_against_direct(&(n, c, k, side, side), 40 + seed as u64);
    }
}

#[test]
fn every_algorithm_gives_the_same_bits_for_any_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let geom = Conv2dGeom::SAME_3X3;
    // Large enough for every GEMM to be split between threads; 70 images of 12x11 make two F(2x2)
    // groups; 1100 images of 3x3 five F(4x4) groups.
    for dims in [[9, 40, 12, 12], [70, 8, 12, 11], [1100, 4, 3, 3]] {
        let x = random(&dims, &mut rng);
        let wt = random(&[72, dims[1], 3, 3], &mut rng);
        let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
        let dy = random(&d.y_dims(), &mut rng);
        let dw0 = random(&d.weight_dims(), &mut rng);
        for algo in Conv2dAlgo::ALL {
            let on = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| run(algo, &x, &wt, &dy, &dw0, &d))
            };
            let one = on(1);
            for threads in [2, 3] {
                let other = on(threads);
                for (i, name) in ["y", "dx", "dweight"].iter().enumerate() {
                    assert!(
                        one[i] == other[i],
                        "{}: {dims:?}: {name} differs between 1 and {threads} threads",
                        algo.name()
                    );
                }
            }
        }
    }
}

#[test]
fn winograd_refuses_other_geometries() {
    let x = Tensor::zeros([1, 2, 6, 6]);
    let w = Tensor::zeros([3, 2, 3, 3]);
    let geom = Conv2dGeom { stride: 2, pad: 1 };
    let d = Conv2dDims::new("test", x.dims(), w.dims(), geom).unwrap();
    assert_eq!(
        Conv2dAlgo::choose(&d, Conv2dPass::Forward),
        Conv2dAlgo::Direct
    );
    let mut y = Tensor::zeros(d.y_dims());
    let e = conv2d_forward_using(Some(Conv2dAlgo::Sliding), &mut y, &x, &w, geom).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conv2d_forward: the sliding convolution needs stride 1 and an odd square kernel padded \
         to keep the map's size, not 3x3, stride 2, pad 1"
    );
    for (algo, tile) in [
        (Conv2dAlgo::Winograd2, "2x2"),
        (Conv2dAlgo::Winograd4, "4x4"),
    ] {
        let mut y = Tensor::zeros(d.y_dims());
        let e = conv2d_forward_using(Some(algo), &mut y, &x, &w, geom).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "conv2d_forward: Winograd F({tile}, 3x3) needs a 3x3 kernel, stride 1 and pad 1, \
                 not 3x3, stride 2, pad 1"
            )
        );
        let w5 = Tensor::zeros([3, 2, 5, 5]);
        let mut dw = w5.clone();
        let e = conv2d_backward_weight_using(
            Some(algo),
            &mut dw,
            &Tensor::zeros([1, 3, 4, 4]),
            &x,
            Conv2dGeom::SAME_3X3,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "conv2d_backward_weight: Winograd F({tile}, 3x3) needs a 3x3 kernel, stride 1 and \
                 pad 1, not 5x5, stride 1, pad 1"
            )
        );
        let mut dx = Tensor::zeros([1, 2, 6, 6]);
        let e = conv2d_backward_data_using(
            Some(algo),
            &mut dx,
            &Tensor::zeros([1, 3, 4, 4]),
            &w,
            Conv2dGeom { stride: 1, pad: 0 },
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("not 3x3, stride 1, pad 0"), "{e}");
    }
}

#[test]
fn choose_follows_the_measured_rule() {
    use Conv2dAlgo::{Direct, Sliding, Winograd2, Winograd4};
    let choose = |c: usize, k: usize, side: usize, geom| {
        let d = Conv2dDims::new("test", &[64, c, side, side], &[k, c, 3, 3], geom).unwrap();
        let picks = [
            Conv2dPass::Forward,
            Conv2dPass::BackwardData,
            Conv2dPass::BackwardWeight,
        ]
        .map(|pass| Conv2dAlgo::choose(&d, pass));
        assert!(picks.iter().all(|a| a.computes(&d)), "{picks:?}");
        picks
    };
    let same = Conv2dGeom::SAME_3X3;
    // (C, K, side) -> [forward, backward-data, backward-weight].
    for (c, k, side, want) in [
        (3, 128, 32, [Sliding, Direct, Direct]),
        (3, 8, 32, [Sliding, Direct, Direct]),
        (8, 8, 32, [Sliding; 3]),
        (64, 64, 16, [Sliding; 3]),
        (64, 128, 8, [Sliding; 3]),
        (128, 128, 8, [Sliding, Sliding, Winograd2]),
        (128, 256, 4, [Sliding, Sliding, Direct]),
        (256, 256, 4, [Direct; 3]),
        (128, 128, 32, [Winograd4; 3]),
        (128, 256, 16, [Winograd4, Winograd2, Winograd2]),
        (256, 256, 16, [Winograd4, Winograd2, Winograd2]),
        (512, 512, 8, [Winograd2; 3]),
        (1024, 1024, 4, [Direct; 3]),
    ] {
        assert_eq!(choose(c, k, side, same), want, "({c}, {k}, {side})");
    }
    let strided = Conv2dGeom { stride: 2, pad: 1 };
    assert_eq!(choose(256, 256, 16, strided), [Direct; 3]);
    assert_eq!(choose(32, 32, 16, strided), [Direct; 3]);
}

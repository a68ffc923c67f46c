//! The sliding kernels of every instruction set this CPU has against the im2col path (itself
//! checked against a naive loop in `conv2d/tests.rs`), on odd shapes and kernel sizes; thread-
//! count independence for each instruction set.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{backward_data, backward_weight, forward, Taps};
use crate::conv2d::tests::random;
use crate::conv2d::{cpu, Conv2dDims, Conv2dGeom};
use crate::simd::Isa;

/// The bound on |sliding - im2col| for an output that sums `r` products of values in [-1, 1]:
/// each path rounds along a chain of at most r additions, independent roundings of random sign
/// grow like a random walk (sqrt(r) u), and the partial sums of r centred products reach about
/// sqrt(r) (Higham's rule of thumb, as in `winograd/tests.rs`): u r for each path, 4x margin for
/// the lanes' partial sums being added in a different order from the GEMM's.
fn tolerance(r: usize) -> f64 {
    const U: f64 = f32::EPSILON as f64 / 2.0;
    const MARGIN: f64 = 4.0;
    2.0 * MARGIN * U * r as f64
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

/// [y, dx, dweight] of one instruction set's kernels, dweight accumulated onto `dw0`; every
/// output starts as NaN (or `dw0`), so a value a kernel forgets to write shows.
fn run(isa: Isa, x: &[f32], w: &[f32], dy: &[f32], dw0: &[f32], d: &Conv2dDims) -> [Vec<f32>; 3] {
    let mut y = vec![f32::NAN; dy.len()];
    forward(isa, &mut y, x, w, d).unwrap();
    let mut dx = vec![f32::NAN; x.len()];
    backward_data(isa, &mut dx, dy, w, d).unwrap();
    let mut dw = dw0.to_vec();
    backward_weight(isa, &mut dw, dy, x, d).unwrap();
    [y, dx, dw]
}

/// The im2col path's [y, dx, dweight].
fn reference(x: &[f32], w: &[f32], dy: &[f32], dw0: &[f32], d: &Conv2dDims) -> [Vec<f32>; 3] {
    let mut y = vec![0.0; dy.len()];
    cpu::forward(&mut y, x, w, d).unwrap();
    let mut dx = vec![0.0; x.len()];
    cpu::backward_data(&mut dx, dy, w, d).unwrap();
    let mut dw = dw0.to_vec();
    cpu::backward_weight(&mut dw, dy, x, d).unwrap();
    [y, dx, dw]
}

/// Random x: (n, c, h, w), weight: (k, c, kernel, kernel), dy and dw0, and their dims.
pub(super) fn case(
    (n, c, k, h, w, kernel): (usize, usize, usize, usize, usize, usize),
    seed: u64,
) -> ([Vec<f32>; 4], Conv2dDims) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let geom = Conv2dGeom {
        stride: 1,
        pad: kernel / 2,
    };
    let x = random(&[n, c, h, w], &mut rng);
    let wt = random(&[k, c, kernel, kernel], &mut rng);
    let d = Conv2dDims::new("test", x.dims(), wt.dims(), geom).unwrap();
    let dy = random(&d.y_dims(), &mut rng);
    let dw0 = random(&d.weight_dims(), &mut rng);
    ([x, wt, dy, dw0].map(|t| t.to_vec()), d)
}

/// (N, C, K, H, W, kernel): planes that are and are not multiples of 8 and 16 values (a partial
/// last vector), 1x1 and 1xW maps where most taps fall outside, channel counts that leave partial
/// register tiles (K, C not multiples of 8, 3, 4 or 2; odd C, a zero channel in BF16's last
/// pair), 1x1 and 5x5 kernels, a batch split into several image ranges and groups, and the
/// network's 3 -> 8 first layer. The BF16 kernels' test runs these too.
pub(super) const ODD_SHAPES: [(usize, usize, usize, usize, usize, usize); 12] = [
    (2, 3, 5, 7, 9, 3),
    (1, 1, 1, 1, 1, 3),
    (3, 2, 3, 1, 6, 3),
    (4, 6, 9, 5, 2, 3),
    (2, 5, 7, 4, 4, 3),
    (37, 5, 7, 4, 4, 3),
    (3, 19, 17, 10, 13, 3),
    (2, 4, 6, 8, 8, 1),
    (2, 3, 4, 6, 7, 5),
    (70, 2, 3, 12, 12, 3),
    (5, 3, 8, 32, 32, 3),
    (3, 40, 24, 8, 8, 3),
];

#[test]
fn every_instruction_set_matches_im2col_on_odd_shapes() {
    for (i, &shape) in ODD_SHAPES.iter().enumerate() {
        let ([x, w, dy, dw0], d) = case(shape, 100 + i as u64);
        let want = reference(&x, &w, &dy, &dw0, &d);
        let kk = d.kh * d.kw;
        let sums = [kk * d.c, kk * d.k, d.n * d.h * d.w];
        for isa in Isa::available_all() {
            let got = run(isa, &x, &w, &dy, &dw0, &d);
            for (p, name) in ["y", "dx", "dweight"].iter().enumerate() {
                assert_within(
                    &format!("{isa}: {shape:?}: {name}"),
                    &got[p],
                    &want[p],
                    tolerance(sums[p]),
                );
            }
        }
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits_for_any_thread_count() {
    // Enough images for several groups and image ranges, and channels for several tiles.
    for (i, shape) in [(41, 7, 10, 6, 5, 3), (9, 24, 17, 16, 16, 3)]
        .into_iter()
        .enumerate()
    {
        let ([x, w, dy, dw0], d) = case(shape, 200 + i as u64);
        for isa in Isa::available_all() {
            let on = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| run(isa, &x, &w, &dy, &dw0, &d))
            };
            let one = on(1);
            for threads in [2, 3] {
                let other = on(threads);
                for (p, name) in ["y", "dx", "dweight"].iter().enumerate() {
                    assert!(
                        one[p] == other[p],
                        "{isa}: {shape:?}: {name} differs between 1 and {threads} threads"
                    );
                }
            }
        }
    }
}

#[test]
fn tap_masks_select_the_pixels_whose_input_is_inside() {
    // A 3x3 map in vectors of 8 lanes: vector 0 holds pixels 0..8, vector 1 pixel 8 alone.
    let d = Conv2dDims::new("test", &[1, 1, 3, 3], &[1, 1, 3, 3], Conv2dGeom::SAME_3X3).unwrap();
    let taps = Taps::new(&d, 8);
    assert_eq!((taps.vectors, taps.count), (2, 9));
    assert_eq!(taps.offsets, vec![-4, -3, -2, -1, 0, 1, 2, 3, 4]);
    assert_eq!(taps.tails, vec![0xff, 0x01]);
    // Tap (0, 0) reads (y - 1, x - 1): inside for pixels 4, 5, 7 (y, x >= 1) and 8.
    assert_eq!(taps.masks[0], 1 << 4 | 1 << 5 | 1 << 7);
    assert_eq!(taps.masks[9], 1);
    // The centre tap reads every pixel.
    assert_eq!(taps.masks[4], 0xff);
    // Tap (2, 2) reads (y + 1, x + 1): inside for pixels 0, 1, 3, 4; pixel 8 (2, 2) is not.
    assert_eq!(taps.masks[8], 0b11011);
    assert_eq!(taps.masks[17], 0);
}

//! The tensor-core GEMMs against a CPU reference that rounds the operands as the kernels do
//! (crate::precision), on the emulated device (`emu_`) and a real one (`gpu_`): random operands
//! within a tolerance derived from K and FP32's unit roundoff, permutation matrices exactly, both
//! block tiles (which must agree bit for bit), every transpose pair, shapes that are no multiple of
//! the tiles and operands whose rows are not 16-byte aligned.

use super::*;
use crate::cuda::emu::Emu;
use crate::cuda::parity::{on_emu_and_gpu, uniform};
use crate::precision::{bf16_round, tf32_round, to_bf16, Bf16};

/// Every transpose pair of (a, b); the first two hold each operand in both shared layouts.
const PAIRS: [(Trans, Trans); 4] = [
    (Trans::No, Trans::No),
    (Trans::Yes, Trans::Yes),
    (Trans::No, Trans::Yes),
    (Trans::Yes, Trans::No),
];

/// FP32's unit roundoff, 2^-24.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// A stored (rows, cols) row-major matrix as op(x) element (i, j).
fn op_at(x: &[f32], cols: usize, trans: Trans, i: usize, j: usize) -> f32 {
    match trans {
        Trans::No => x[i * cols + j],
        Trans::Yes => x[j * cols + i],
    }
}

/// op(a) op(b) in f64 of operands as stored ((m, k) or (k, m); (k, n) or (n, k)), values already
/// rounded, and the sums of |a b| per output.
fn reference(
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    (m, k, n): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let (a_cols, b_cols) = (
        if ta == Trans::No { k } else { m },
        if tb == Trans::No { n } else { k },
    );
    let mut exact = vec![0.0f64; m * n];
    let mut magnitude = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for kk in 0..k {
                let p =
                    f64::from(op_at(a, a_cols, ta, i, kk)) * f64::from(op_at(b, b_cols, tb, kk, j));
                exact[i * n + j] += p;
                magnitude[i * n + j] += p.abs();
            }
        }
    }
    (exact, magnitude)
}

/// One product on the device: `a` and `b` as stored, in the kernels' element type `T`.
#[allow(clippy::too_many_arguments)]
fn run<B: Backend, T: TcElem>(
    dev: &B,
    tile: GemmTile,
    a: &[T],
    ta: Trans,
    b: &[T],
    tb: Trans,
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    beta: f32,
    c0: &[f32],
) -> Vec<f32> {
    let (ab, bb) = (dev.upload(a).unwrap(), dev.upload(b).unwrap());
    let stored = |t: Trans, rows: usize, cols: usize| match t {
        Trans::No => (rows, cols),
        Trans::Yes => (cols, rows),
    };
    let ((ar, ac), (br, bc)) = (stored(ta, m, k), stored(tb, k, n));
    let mut c = dev.upload(c0).unwrap();
    let op_a = TcOperand {
        data: &ab,
        rows: ar,
        cols: ac,
        trans: ta,
    };
    let op_b = TcOperand {
        data: &bb,
        rows: br,
        cols: bc,
        trans: tb,
    };
    gemm_tc_tiled(dev, tile, alpha, op_a, op_b, beta, &mut c).unwrap();
    dev.download(&c).unwrap()
}

/// Checks alpha * op(a) op(b) + beta * c0 of operands rounded as the kernel rounds them. The
/// tolerance: the kernel adds K exact products in FP32 (then scales by alpha and adds beta c0);
/// each addition rounds with relative error at most u = 2^-24 (2u if the tensor core's adder
/// truncates, as it may on a GPU), so by Higham's bound for recursive summation
/// |kernel - exact| <= 2 (K + 2) u (|alpha| sum |a b| + |beta c0|), the 2 extra terms for alpha
/// and beta. NaN never passes.
#[allow(clippy::too_many_arguments)]
fn check(
    what: &str,
    got: &[f32],
    exact: &[f64],
    magnitude: &[f64],
    k: usize,
    alpha: f32,
    beta: f32,
    c0: &[f32],
) {
    for i in 0..got.len() {
        let want = f64::from(alpha) * exact[i] + f64::from(beta) * f64::from(c0[i]);
        let scale =
            f64::from(alpha.abs()) * magnitude[i] + f64::from(beta.abs()) * f64::from(c0[i].abs());
        let bound = 2.0 * (k as f64 + 2.0) * U * scale;
        let err = (f64::from(got[i]) - want).abs();
        assert!(
            err <= bound,
            "{what}: first mismatch at index {i}: gpu {:e}, want {want:e} (error {err:e} > {bound:e})",
            got[i]
        );
    }
}

/// (m, k, n): one element; tiny; K and N not multiples of 4 (rows of a, b and their transposes
/// misaligned: the element-by-element copies); whole 64 x 64 tiles; M past 128 with whole 16-byte
/// rows (the one shape also run in the large tile); then a K of 9 TF32 and 5 BF16 steps (more
/// than the 3 stages: every stage refilled).
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (5, 3, 7),
    (17, 70, 33),
    (64, 96, 64),
    (130, 72, 40),
    (48, 288, 40),
];

/// The emulator runs each warp's mma and ldmatrix as a meeting of 32 threads, a few hundred
/// microseconds each on two loaded cores: the shapes run in the 64 x 64 tile in every transpose
/// pair, and the larger ones in fewer. The large tile (four times the meetings of the small one
/// per block) runs one shape in the pairs nn and tt, which between them hold each operand in both
/// shared layouts; its paths that differ from the small tile's are the sizes, not the copies.
fn matches_reference<B: Backend, T: TcElem>(
    dev: &B,
    to_t: fn(&[f32]) -> Vec<T>,
    round: fn(f32) -> f32,
) {
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let pairs = match k {
            0..=96 if m <= 64 => &PAIRS[..],
            0..=96 => &PAIRS[..2],
            _ => &PAIRS[..1],
        };
        for (t, &(ta, tb)) in pairs.iter().enumerate() {
            let seed = 1000 + 10 * s as u64 + t as u64;
            let a = uniform(seed, m * k, -1.0, 1.0);
            let b = uniform(seed + 1, k * n, -1.0, 1.0);
            let c0 = uniform(seed + 2, m * n, -1.0, 1.0);
            let (ar, br): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|&v| round(v)).collect(),
                b.iter().map(|&v| round(v)).collect(),
            );
            let (exact, magnitude) = reference(&ar, ta, &br, tb, (m, k, n));
            let (at, bt) = (to_t(&a), to_t(&b));
            // Half the pairs overwrite c (which starts poisoned: every value must be written),
            // half accumulate into it.
            let (alpha, beta, start) = if t % 2 == 0 {
                (1.0, 0.0, vec![f32::NAN; m * n])
            } else {
                (-1.5, 0.5, c0.clone())
            };
            let tiles = if m > 128 {
                &GemmTile::ALL[..]
            } else {
                &GemmTile::ALL[1..]
            };
            let mut per_tile = Vec::new();
            for &tile in tiles {
                let what =
                    format!("({m}, {k}, {n}) {ta:?} {tb:?} alpha {alpha} beta {beta} {tile:?}");
                let got = run(dev, tile, &at, ta, &bt, tb, (m, k, n), alpha, beta, &start);
                check(&what, &got, &exact, &magnitude, k, alpha, beta, &c0);
                per_tile.push(got);
            }
            // Both tiles add each output's products in the same order: the same bits.
            if let [large, small] = &per_tile[..] {
                let same = large
                    .iter()
                    .zip(small)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "({m}, {k}, {n}) {ta:?} {tb:?}: the 128 and 64 tiles differ"
                );
            }
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
    emu_gemm_tf32_matches_reference,
    gpu_gemm_tf32_matches_reference,
    tf32_matches_reference
);
on_emu_and_gpu!(
    emu_gemm_bf16_matches_reference,
    gpu_gemm_bf16_matches_reference,
    bf16_matches_reference
);

/// A permutation matrix times small integers (exact in TF32, BF16 and every FP32 sum of their
/// products), on either side: the output is the other operand's rows (or columns) moved, exactly,
/// so any fragment or tile read or written from the wrong place shows, in every transpose pair.
fn permutations_are_exact<B: Backend, T: TcElem>(dev: &B, to_t: fn(&[f32]) -> Vec<T>) {
    let (p, other) = (40usize, 24usize);
    // pi(i) = (7 i + 3) % 40, a permutation (7 and 40 are coprime).
    let pi = |i: usize| (7 * i + 3) % p;
    let mut perm = vec![0.0f32; p * p]; // perm(i, pi(i)) = 1
    for i in 0..p {
        perm[i * p + pi(i)] = 1.0;
    }
    let ints: Vec<f32> = uniform(7, p * other, -8.0, 8.0)
        .iter()
        .map(|v| v.round())
        .collect();
    let transposed = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        (0..rows * cols)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect()
    };
    for (ta, tb) in PAIRS {
        let stored = |x: &[f32], rows, cols, t| {
            if t == Trans::Yes {
                transposed(x, rows, cols)
            } else {
                x.to_vec()
            }
        };
        // perm (p, p) x ints (p, other): row i is ints' row pi(i).
        let c = run(
            dev,
            GemmTile::Small,
            &to_t(&stored(&perm, p, p, ta)),
            ta,
            &to_t(&stored(&ints, p, other, tb)),
            tb,
            (p, p, other),
            1.0,
            0.0,
            &vec![f32::NAN; p * other],
        );
        let want: Vec<f32> = (0..p * other)
            .map(|x| ints[pi(x / other) * other + x % other])
            .collect();
        assert_eq!(c, want, "perm x ints, {ta:?} {tb:?}");
        // ints^T (other, p) x perm (p, p): column j is ints^T's column pi^-1(j), i.e. c(r, pi(i)) = ints(i, r).
        let ints_t = transposed(&ints, p, other);
        let c = run(
            dev,
            GemmTile::Small,
            &to_t(&stored(&ints_t, other, p, ta)),
            ta,
            &to_t(&stored(&perm, p, p, tb)),
            tb,
            (other, p, p),
            1.0,
            0.0,
            &vec![f32::NAN; other * p],
        );
        let mut want = vec![0.0f32; other * p];
        for i in 0..p {
            for r in 0..other {
                want[r * p + pi(i)] = ints[i * other + r];
            }
        }
        assert_eq!(c, want, "ints^T x perm, {ta:?} {tb:?}");
    }
}

fn both_permutations_are_exact<B: Backend>(dev: &B) {
    permutations_are_exact::<_, f32>(dev, |x| x.to_vec());
    permutations_are_exact::<_, Bf16>(dev, to_bf16);
}

on_emu_and_gpu!(
    emu_gemm_tc_permutations_are_exact,
    gpu_gemm_tc_permutations_are_exact,
    both_permutations_are_exact
);

#[test]
fn emu_gemm_tc_refuses_mismatched_shapes() {
    let dev = Emu;
    let a = dev.upload(&[0.0f32; 6]).unwrap();
    let mut c = dev.alloc::<f32>(5).unwrap();
    let operand = |rows, cols, trans| DevOperand {
        data: &a,
        rows,
        cols,
        trans,
    };
    let e = gemm_tf32(
        &dev,
        1.0,
        operand(2, 3, Trans::No),
        operand(2, 3, Trans::No),
        0.0,
        &mut c,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda gemm_tc: op(a) is (2, 3) but op(b) is (2, 3)"
    );
    let e = gemm_tf32(
        &dev,
        1.0,
        operand(2, 3, Trans::No),
        operand(2, 3, Trans::Yes),
        0.0,
        &mut c,
    );
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda gemm_tc: c holds 5 values, expected 4"
    );
    let h = dev.upload(&to_bf16(&[0.0; 6])).unwrap();
    let bf = |rows, cols| TcOperand {
        data: &h,
        rows,
        cols,
        trans: Trans::No,
    };
    let e = gemm_bf16(&dev, 1.0, bf(3, 3), bf(2, 3), 0.0, &mut c);
    assert_eq!(
        e.unwrap_err().to_string(),
        "cuda gemm_tc: a holds 6 values, expected 9"
    );
}

//! The CPU GEMM: a thin, checked-elsewhere call into the `gemm` crate.
//!
//! Determinism: the `gemm` crate splits the work between threads over blocks of the output only;
//! the sum over the inner dimension runs, for every output value, through the same sequence of
//! `kc`-sized depth blocks (chosen from the shape and the cache sizes, not from the thread count)
//! in the same microkernel. So a product is bit-identical whatever the number of threads, which
//! `tests::threads_do_not_change_the_result` checks on shapes large enough to be split.

use gemm_common::Parallelism;

use super::{shallow, Operand, Trans};

/// Products with fewer multiply-adds than this run on the calling thread: below it, waking the
/// pool costs more than it saves.
pub(crate) const PARALLEL_MIN_MACS: usize = 64 * 64 * 64;

/// Row and column strides of op(x) inside the row-major storage of `x`.
fn strides(x: &Operand<'_>) -> (isize, isize) {
    let ld = x.cols as isize;
    match x.trans {
        Trans::No => (ld, 1),
        Trans::Yes => (1, ld),
    }
}

/// Whether [`shallow::shallow_at`] computes this product: c (+)= a^T b (alpha 1, beta 0 or 1)
/// with a depth of at most [`shallow::MAX_DEPTH`], an output large enough to be worth it, on a
/// CPU with AVX2 or AVX-512 (elsewhere the `gemm` crate's own code serves).
fn shallow_applies(
    isa: crate::simd::Isa,
    a: &Operand<'_>,
    b: &Operand<'_>,
    alpha: f32,
    beta: f32,
    (m, n, k): (usize, usize, usize),
) -> bool {
    isa != crate::simd::Isa::Portable
        && a.trans == Trans::Yes
        && b.trans == Trans::No
        && alpha == 1.0
        && (beta == 0.0 || beta == 1.0)
        && k <= shallow::MAX_DEPTH
        && m * n >= SHALLOW_MIN_OUTPUT
}

/// Outputs smaller than this (values of c) keep the `gemm` crate even when shallow.
const SHALLOW_MIN_OUTPUT: usize = 64 * 64;

/// c = alpha * op(a) op(b) + beta * c, with shapes already checked by the caller:
/// op(a): (m, k), op(b): (k, n), c: (m, n), all row-major. With `beta == 0`, `c` is not read (a NaN
/// in it does not survive), as in BLAS.
pub(crate) fn sgemm(
    alpha: f32,
    a: &Operand<'_>,
    b: &Operand<'_>,
    beta: f32,
    c: &mut [f32],
    parallel: bool,
) {
    let (m, k) = a.op_dims();
    let n = b.op_dims().1;
    debug_assert_eq!(c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let parallel = parallel && m * n * k >= PARALLEL_MIN_MACS;
    let isa = crate::simd::isa();
    if shallow_applies(isa, a, b, alpha, beta, (m, n, k)) {
        let accumulate = beta != 0.0;
        shallow::shallow_at(isa, (a.data, b.data), c, (m, n, k), accumulate, parallel);
        return;
    }
    let parallelism = if parallel {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    };
    let (a_rs, a_cs) = strides(a);
    let (b_rs, b_cs) = strides(b);
    // SAFETY: the caller checked that `a` holds op(a) = (m, k), `b` holds op(b) = (k, n) and `c`
    // holds (m, n) values, so every offset the strides above produce stays inside its slice;
    // `c` is borrowed mutably, so it cannot alias `a` or `b`. The crate computes
    // dst := alpha_g * dst + beta_g * lhs * rhs, hence our beta goes first and our alpha second.
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{sgemm, sgemm_serial, Operand, Trans};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The naive reference: the only triple loop over a matrix product in the project.
    fn naive(alpha: f32, a: &Operand<'_>, b: &Operand<'_>, beta: f32, c: &mut [f32]) {
        let (m, k) = a.op_dims();
        let n = b.op_dims().1;
        let at = |i: usize, l: usize| match a.trans {
            Trans::No => a.data[i * a.cols + l],
            Trans::Yes => a.data[l * a.cols + i],
        };
        let bt = |l: usize, j: usize| match b.trans {
            Trans::No => b.data[l * b.cols + j],
            Trans::Yes => b.data[j * b.cols + l],
        };
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|l| at(i, l) as f64 * bt(l, j) as f64).sum();
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * c[i * n + j] as f64
                };
                c[i * n + j] = (alpha as f64 * dot + prev) as f32;
            }
        }
    }

    fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// f32 products of length k accumulate rounding of about k * 2^-24 relative to sum |a b|;
    /// the reference is computed in f64. Values here are in [-1, 1], so |a b| <= 1.
    fn tolerance(k: usize) -> f32 {
        const ULPS_PER_TERM: f32 = 4.0;
        1e-6 + ULPS_PER_TERM * f32::EPSILON * k as f32
    }

    fn operand(data: &[f32], rows: usize, cols: usize, trans: Trans) -> Operand<'_> {
        Operand {
            data,
            rows,
            cols,
            trans,
        }
    }

    #[test]
    fn matches_the_naive_product_for_every_transpose_and_scale() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (70, 65, 80), (5, 130, 3)] {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    for &(alpha, beta) in &[(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                        let (ar, ac) = if ta == Trans::No { (m, k) } else { (k, m) };
                        let (br, bc) = if tb == Trans::No { (k, n) } else { (n, k) };
                        let a = random(m * k, &mut rng);
                        let b = random(k * n, &mut rng);
                        let c0 = random(m * n, &mut rng);
                        let (oa, ob) = (operand(&a, ar, ac, ta), operand(&b, br, bc, tb));
                        let mut want = c0.clone();
                        naive(alpha, &oa, &ob, beta, &mut want);
                        let mut got = c0.clone();
                        sgemm(alpha, oa, ob, beta, &mut got).unwrap();
                        let tol = tolerance(k) * f32::abs(alpha).max(1.0);
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= tol,
                                "m {m} n {n} k {k} {ta:?} {tb:?} alpha {alpha} beta {beta}: \
                                 index {i}: got {g}, want {w}"
                            );
                        }
                        let mut serial = c0.clone();
                        sgemm_serial(alpha, oa, ob, beta, &mut serial).unwrap();
                        assert_eq!(serial, got, "serial and parallel entry points differ");
                    }
                }
            }
        }
    }

    #[test]
    fn beta_zero_does_not_read_c() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [1.0f32, 0.0, 0.0, 1.0];
        let mut c = [f32::NAN; 4];
        let oa = operand(&a, 2, 2, Trans::No);
        let ob = operand(&b, 2, 2, Trans::No);
        sgemm(1.0, oa, ob, 0.0, &mut c).unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn threads_do_not_change_the_result() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // Large enough that the crate splits them between threads (and in depth blocks).
        for &(m, n, k) in &[(300, 257, 513), (128, 1024, 1152), (512, 64, 1100)] {
            let a = random(m * k, &mut rng);
            let b = random(k * n, &mut rng);
            let c0 = random(m * n, &mut rng);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut c = c0.clone();
                    let oa = operand(&a, m, k, Trans::No);
                    let ob = operand(&b, n, k, Trans::Yes);
                    sgemm(0.75, oa, ob, 1.0, &mut c).unwrap();
                    c
                })
            };
            let one = run(1);
            for threads in [2, 3] {
                assert!(
                    one == run(threads),
                    "({m}, {n}, {k}): 1 and {threads} threads differ"
                );
            }
        }
    }
}

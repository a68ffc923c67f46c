//! Shallow products c (+)= a^T b, a: (K, M) and b: (K, N) stored row-major, K small: a linear
//! layer's weight gradient, dW (O, F) += dY^T (O, N) X (N, F), whose depth is the batch; and the
//! products of a Winograd convolution at each position, M (K, P) = U^T V over the input channels
//! (`conv2d/winograd`, one product a thread).
//!
//! Why not the `gemm` crate: at such depths its packing and blocking cost more than the
//! arithmetic. The seed's fc1 gradient (M = 4,096, N = 16,384, K = 64) took 450 to 510 ms
//! through it accumulating into c, 200 to 230 ms overwriting c; this kernel takes 58 to 61 ms
//! (about 145 GFLOP/s, c's 268 MB read and written once), on 2 vCPUs of a Zen 4 EPYC
//! (BENCHMARKS.md, "A linear layer's weight gradient").
//!
//! How: a register tile of MR rows of c by NR vectors of columns holds its sums over the whole
//! depth; for each depth index it loads NR vectors of b's row and broadcasts MR values of a's
//! row (contiguous: a is stored (K, M)); then c's tile is read, added to and written once. Tiles
//! run over panels of [`PANEL`] columns, one rayon task each, whose slice of b (K x PANEL) stays
//! in the core's L2 cache while every row block passes over it.
//!
//! Rounding: each value of c is one FMA chain over the depth in order, then one addition to c:
//! the same for every thread count; each instruction set's result is the same bits (a lane's
//! chain is the same whatever the vector width).

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::simd::{Isa, Portable, Simd};

/// The deepest product `cpu::sgemm` gives this kernel: deeper ones amortise the `gemm` crate's
/// packing. (Winograd's products call it at any depth; calibration times them against the
/// other algorithms.)
pub(crate) const MAX_DEPTH: usize = 256;

/// Columns of c per task: b's panel of MAX_DEPTH x PANEL floats is 256 KiB, within L2.
const PANEL: usize = 256;

/// What one task reads and writes.
struct Panel<'a> {
    a: &'a [f32],
    b: &'a [f32],
    /// c's columns [j0, j0 + width) of every row, as a pointer: the panels of c interleave in
    /// memory (each row holds a piece of each), so no task can hold them as a slice.
    c: *mut f32,
    m: usize,
    n: usize,
    k: usize,
    j0: usize,
    width: usize,
    accumulate: bool,
}

/// One panel: rows MR at a time, columns NR vectors at a time.
///
/// # Safety
/// `S`'s instruction set is available; `p.c` points to an (m, n) row-major matrix of which this
/// call alone touches columns [j0, j0 + width); `a` holds k m values and `b` k n.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn panel<S: Simd, const MR: usize, const NR: usize>(p: &Panel<'_>, lanes: usize) {
    let (a, b) = (p.a.as_ptr(), p.b.as_ptr());
    let step = NR * lanes;
    for i0 in (0..p.m).step_by(MR) {
        let live_rows = MR.min(p.m - i0);
        // Rows past the last broadcast the last row's a again (their sums are not stored).
        let mut row = [0usize; MR];
        for r in 0..MR {
            row[r] = (i0 + r).min(p.m - 1);
        }
        for first in (p.j0..p.j0 + p.width).step_by(step) {
            let mut masks = [S::mask(0); NR];
            for i in 0..NR {
                let from = first + i * lanes;
                let live = (p.j0 + p.width).saturating_sub(from).min(lanes);
                masks[i] = S::mask(((1u64 << live) - 1) as u32);
            }
            let mut acc = [[S::zero(); NR]; MR];
            for l in 0..p.k {
                let b_row = b.add(l * p.n + first);
                let mut v = [S::zero(); NR];
                for i in 0..NR {
                    // A masked load touches only its live lanes: past the panel it reads nothing.
                    v[i] = S::load_masked(b_row.wrapping_add(i * lanes), masks[i]);
                }
                let a_row = a.add(l * p.m);
                for r in 0..MR {
                    let s = S::splat(*a_row.add(row[r]));
                    for i in 0..NR {
                        acc[r][i] = S::fmadd(s, v[i], acc[r][i]);
                    }
                }
            }
            // Constant bounds keep `acc` in registers.
            for r in 0..MR {
                if r >= live_rows {
                    continue;
                }
                let c_row = p.c.add((i0 + r) * p.n + first);
                for i in 0..NR {
                    let at = c_row.wrapping_add(i * lanes);
                    let sum = if p.accumulate {
                        // 1 * acc + c: one rounding, the sum's.
                        S::fmadd(S::splat(1.0), acc[r][i], S::load_masked(at, masks[i]))
                    } else {
                        acc[r][i]
                    };
                    S::store_masked(at, sum, masks[i]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn panel_avx512(p: &Panel<'_>) {
    panel::<Avx512, 8, 3>(p, 16)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_avx2(p: &Panel<'_>) {
    panel::<Avx2, 4, 2>(p, 8)
}

/// [`panel`] with `isa`'s instruction set and tile.
fn panel_on(isa: Isa, p: &Panel<'_>) {
    debug_assert!(isa.available());
    match isa {
        // SAFETY: `isa` is available; `shallow_at` sized the operands and gave each task its
        // own columns of c.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { panel_avx512(p) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { panel_avx2(p) },
        // SAFETY: plain Rust; the operands as above.
        _ => unsafe { panel::<Portable, 4, 2>(p, Isa::Portable.lanes()) },
    }
}

/// A raw pointer that rayon's tasks may share: each writes only its own columns through it.
#[derive(Clone, Copy)]
struct SharedC(*mut f32);
// SAFETY: the tasks write disjoint columns of c (one panel each) and read nothing of c that
// another writes; `shallow_at` holds c borrowed mutably until they end.
unsafe impl Send for SharedC {}
// SAFETY: as above.
unsafe impl Sync for SharedC {}

impl SharedC {
    /// The pointer (a method, so that a closure captures the whole `SharedC`, not its field).
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// c = a^T b, or c += a^T b with `accumulate`; a: (k, m), b: (k, n), c: (m, n), all row-major,
/// sizes checked by the caller; k <= [`MAX_DEPTH`] is where it pays. Panels in parallel when
/// `parallel`.
pub(crate) fn shallow_at(
    isa: Isa,
    (a, b): (&[f32], &[f32]),
    c: &mut [f32],
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    assert!(a.len() >= k * m && b.len() >= k * n && c.len() == m * n);
    let shared = SharedC(c.as_mut_ptr());
    let task = |panel: usize| {
        let j0 = panel * PANEL;
        let p = Panel {
            a,
            b,
            c: shared.get(),
            m,
            n,
            k,
            j0,
            width: PANEL.min(n - j0),
            accumulate,
        };
        panel_on(isa, &p);
    };
    let panels = n.div_ceil(PANEL);
    if parallel {
        (0..panels).into_par_iter().for_each(task);
    } else {
        (0..panels).for_each(task);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// a^T b (+ c) in f64, rounded once.
    fn reference(a: &[f32], b: &[f32], c: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                let dot: f64 = (0..k)
                    .map(|l| a[l * m + i] as f64 * b[l * n + j] as f64)
                    .sum();
                (dot + c[ij] as f64) as f32
            })
            .collect()
    }

    /// Shapes that leave partial row blocks (m not a multiple of 8 or 4), partial vectors and
    /// tiles (n not a multiple of 48 or 16), several panels (n > 256), and depths from 1 to the
    /// largest taken; overwriting and accumulating; against an f64 reference within the FMA
    /// chain's rounding (k terms of |a b| <= 1, one rounding each, plus the addition to c).
    #[test]
    fn matches_the_f64_product_on_odd_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (9, 17, 3),
            (13, 300, 64),
            (33, 530, 200),
            (8, 48, 256),
        ] {
            let (a, b) = (random(k * m, 1), random(k * n, 2));
            let c0 = random(m * n, 3);
            let tol = 1e-6 + 2.0 * f32::EPSILON * (k as f32 + 2.0);
            for isa in Isa::available_all() {
                let mut c = c0.clone();
                shallow_at(isa, (&a, &b), &mut c, (m, n, k), true, true);
                let want = reference(&a, &b, &c0, (m, n, k));
                for (ij, (g, w)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= tol,
                        "{isa} {m}x{n}x{k} c[{ij}]: {g} vs {w}"
                    );
                }
                let mut fresh = vec![f32::NAN; m * n];
                shallow_at(isa, (&a, &b), &mut fresh, (m, n, k), false, true);
                let want = reference(&a, &b, &vec![0.0; m * n], (m, n, k));
                for (ij, (g, w)) in fresh.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= tol,
                        "{isa} {m}x{n}x{k} fresh c[{ij}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// The same bits on every instruction set (a lane's FMA chain does not depend on the vector
    /// width) and on one or two threads.
    #[test]
    fn same_bits_on_every_instruction_set_and_thread_count() {
        let (m, n, k) = (21, 700, 64);
        let (a, b, c0) = (random(k * m, 4), random(k * n, 5), random(m * n, 6));
        let run = |isa: Isa, threads: usize| {
            let mut c = c0.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| shallow_at(isa, (&a, &b), &mut c, (m, n, k), true, true));
            c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let want = run(Isa::Portable, 1);
        for isa in Isa::available_all() {
            for threads in [1, 2] {
                assert!(run(isa, threads) == want, "{isa} on {threads} threads");
            }
        }
    }
}

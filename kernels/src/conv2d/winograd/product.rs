//! The forward's product at one position, M (rows, cols) = U (rows, depth) V (depth, cols), by
//! our own register tiles instead of the `gemm` crate: its products of 32 to 64 channels (K) ran
//! at about a fifth of the FMA peak there (`perf`: the crate's microkernel was half of a 32x32
//! layer's time), where a tile of MR rows by NR vectors of columns, fed by one vector load of V
//! per column vector and one broadcast of U per row, needs no packing: V's rows are already
//! contiguous runs of columns and U is a few KiB.
//!
//! Each output is one sum over depth in order e = 0, 1, ..., one fused multiply-add a term: the
//! same bits for any thread count (each product runs on one thread).

#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512};
use crate::simd::{Isa, Portable, Simd};

/// M (rows, cols) = U (rows, depth) V (depth, cols), overwritten; all row-major.
pub(super) fn product(isa: Isa, m: &mut [f32], u: &[f32], v: &[f32], rows: usize, cols: usize) {
    let depth = u.len() / rows;
    assert!(m.len() == rows * cols && u.len() == rows * depth && v.len() == depth * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    if depth == 0 {
        m.fill(0.0);
        return;
    }
    let p = Product {
        m: m.as_mut_ptr(),
        u: u.as_ptr(),
        v: v.as_ptr(),
        rows,
        cols,
        depth,
        lanes: isa.lanes(),
    };
    debug_assert!(isa.available());
    match isa {
        // SAFETY: `isa` is available (the caller takes it from `simd::isa`); the slices' sizes
        // were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { product_avx512(&p) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { product_avx2(&p) },
        // SAFETY: plain Rust; the sizes as above.
        _ => unsafe { tiles::<Portable, 4, 2>(&p) },
    }
}

/// The operands of [`product`], sizes checked.
struct Product {
    m: *mut f32,
    u: *const f32,
    v: *const f32,
    rows: usize,
    cols: usize,
    depth: usize,
    /// f32 in one of the instruction set's vectors.
    lanes: usize,
}

/// M = U V by tiles of MR rows and NR vectors of columns (the last vector of a row masked).
///
/// # Safety
/// `S`'s instruction set is available; p's pointers hold rows x cols, rows x depth and depth x
/// cols values, depth and rows at least 1.
#[inline(always)]
unsafe fn tiles<S: Simd, const MR: usize, const NR: usize>(p: &Product) {
    let lanes = p.lanes;
    let vectors = p.cols.div_ceil(lanes);
    // The last vector's lanes: all of them unless cols is not a multiple.
    let tail = match p.cols % lanes {
        0 => S::mask(u32::MAX >> (32 - lanes)),
        r => S::mask((1u32 << r) - 1),
    };
    let full = S::mask(u32::MAX >> (32 - lanes));
    for first in (0..vectors).step_by(NR) {
        let masks: [S::M; NR] = std::array::from_fn(|i| {
            let vec = first + i;
            if vec + 1 < vectors {
                full
            } else if vec + 1 == vectors {
                tail
            } else {
                S::mask(0)
            }
        });
        for block in (0..p.rows).step_by(MR) {
            // Rows past the last read the last row again and are not stored.
            let u_rows: [*const f32; MR] =
                std::array::from_fn(|r| p.u.add((block + r).min(p.rows - 1) * p.depth));
            let mut acc = [[S::zero(); NR]; MR];
            let mut v_row = p.v.add(first * lanes);
            for e in 0..p.depth {
                let mut b = [S::zero(); NR];
                for i in 0..NR {
                    b[i] = S::load_masked(v_row.wrapping_add(i * lanes), masks[i]);
                }
                for r in 0..MR {
                    let a = S::splat(*u_rows[r].add(e));
                    for i in 0..NR {
                        acc[r][i] = S::fmadd(a, b[i], acc[r][i]);
                    }
                }
                v_row = v_row.wrapping_add(p.cols);
            }
            // Constant bounds keep `acc` in registers.
            for (r, acc_r) in acc.iter().enumerate() {
                if block + r < p.rows {
                    let out = p.m.add((block + r) * p.cols + first * lanes);
                    for i in 0..NR {
                        S::store_masked(out.wrapping_add(i * lanes), acc_r[i], masks[i]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn product_avx512(p: &Product) {
    tiles::<Avx512, 8, 3>(p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(p: &Product) {
    tiles::<Avx2, 4, 2>(p)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn product_matches_a_plain_sum_in_every_instruction_set() {
        // Rows and columns that are and are not multiples of the tiles (8 rows by 3 vectors of
        // 16, 4 by 2 of 8), a depth of 1, one row, one column.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (rows, depth, cols) in [
            (1, 1, 1),
            (8, 32, 48),
            (9, 5, 49),
            (3, 7, 17),
            (32, 32, 1024),
            (13, 1, 100),
            (64, 70, 33),
        ] {
            let u: Vec<f32> = (0..rows * depth)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let v: Vec<f32> = (0..depth * cols)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            // Sums in f64, and of the terms' magnitudes: each of ours is `depth` f32 FMAs, so
            // its error is at most depth u sum |terms| (u = 2^-24, half of f32::EPSILON).
            let sums = |i: usize, f: fn(f64) -> f64| -> f64 {
                let (r, c) = (i / cols, i % cols);
                (0..depth)
                    .map(|e| f(u[r * depth + e] as f64 * v[e * cols + c] as f64))
                    .sum()
            };
            for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
                let mut m = vec![f32::NAN; rows * cols];
                product(isa, &mut m, &u, &v, rows, cols);
                for (i, &got) in m.iter().enumerate() {
                    let want = sums(i, |t| t);
                    let bound = depth as f64 * f32::EPSILON as f64 / 2.0 * sums(i, f64::abs);
                    assert!(
                        (got as f64 - want).abs() <= bound,
                        "{isa}: ({rows}, {depth}, {cols}): M[{i}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}

//! [`Portable`]: the kernels' vector operations in plain Rust on arrays of 8 values, for CPUs
//! without AVX2 (and as a third implementation the tests can run anywhere).

use super::Simd;

const LANES: usize = 8;

/// Plain Rust on `[f32; 8]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

// SAFETY: plain Rust; memory is accessed only as each method's doc allows (masked methods touch
// the selected lanes only).
unsafe impl Simd for Portable {
    type V = [f32; LANES];
    type M = u32;

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; LANES]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; LANES]
    }
    #[inline(always)]
    unsafe fn mask(bits: u32) -> u32 {
        bits
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: u32) -> Self::V {
        std::array::from_fn(|l| {
            if m >> l & 1 == 1 {
                *p.wrapping_add(l)
            } else {
                0.0
            }
        })
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: Self::V, m: u32) {
        for (l, &x) in v.iter().enumerate() {
            if m >> l & 1 == 1 {
                *p.wrapping_add(l) = x;
            }
        }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|l| a[l].mul_add(b[l], c[l]))
    }
    #[inline(always)]
    unsafe fn reduce(v: Self::V) -> f32 {
        // The tree of the AVX2 reduction: halves, then quarters, then pairs.
        let q: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
        let d = [q[0] + q[2], q[1] + q[3]];
        d[0] + d[1]
    }
}

/// 16 chains of FMAs on `[f32; 8]` (the compiler's baseline vectors), `iters` times.
pub(super) fn fma_loop(iters: u64) -> f32 {
    let a = std::hint::black_box(0.999_999f32);
    let b = std::hint::black_box(1e-6f32);
    let mut acc = [[0.0f32; LANES]; 16];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            for x in r.iter_mut() {
                *x = *x * a + b;
            }
        }
    }
    acc.iter().flatten().sum()
}

//! Batch norm's per-channel f64 sums in AVX-512 and AVX2 registers: the additions of
//! [`LaneSums`](super::cpu) (value i of a run to lane i % 16, f64, no fused multiply-add), the
//! same bits. Batch norm and its ReLU run about 2x faster with them (`cargo bench -p benches
//! --bench memory_bound`, BENCHMARKS.md).
//!
//! They are written by hand because the compiler does not vectorise the plain form: it pairs the
//! two sums of one lane in a 2-wide vector and leaves the 16 lanes scalar, whatever the loop's
//! shape (tried: terms gathered per sum, one loop per sum, 8-lane halves).

use std::arch::x86_64::*;

use super::cpu::{Dims, LANES};

/// 16 f64 lanes: two AVX-512 vectors or four AVX2 ones.
///
/// # Safety
/// Every method executes the instruction set's instructions: callers run only on a CPU that has
/// it, inside a function compiled for it. Pointers follow each method's contract.
trait Lanes: Copy {
    unsafe fn splat(v: f64) -> Self;
    /// The 16 f32 at `p`, widened.
    unsafe fn load_f32(p: *const f32) -> Self;
    /// The 16 f32 at `p`, each kept where its byte at `gate` is 1 and +0.0 where it is 0 (the bits
    /// ANDed with the byte's negation, as `cpu::gated` does).
    unsafe fn load_f32_gated(p: *const f32, gate: *const u8) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn store(self, out: &mut [f64; LANES]);
    unsafe fn load(acc: &[f64; LANES]) -> Self;
}

#[derive(Clone, Copy)]
struct Avx512([__m512d; 2]);

#[derive(Clone, Copy)]
struct Avx2([__m256d; 4]);

impl Lanes for Avx512 {
    #[inline(always)]
    unsafe fn splat(v: f64) -> Self {
        Avx512([_mm512_set1_pd(v); 2])
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self {
        Avx512([
            _mm512_cvtps_pd(_mm256_loadu_ps(p)),
            _mm512_cvtps_pd(_mm256_loadu_ps(p.add(8))),
        ])
    }
    #[inline(always)]
    unsafe fn load_f32_gated(p: *const f32, gate: *const u8) -> Self {
        let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(gate.cast()));
        let keep = _mm512_sub_epi32(_mm512_setzero_si512(), bytes);
        let v = _mm512_and_si512(_mm512_loadu_si512(p.cast()), keep);
        let v = _mm512_castsi512_ps(v);
        let low = _mm512_castps512_ps256(v);
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        Avx512([_mm512_cvtps_pd(low), _mm512_cvtps_pd(high)])
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx512([
            _mm512_add_pd(self.0[0], b.0[0]),
            _mm512_add_pd(self.0[1], b.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx512([
            _mm512_sub_pd(self.0[0], b.0[0]),
            _mm512_sub_pd(self.0[1], b.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx512([
            _mm512_mul_pd(self.0[0], b.0[0]),
            _mm512_mul_pd(self.0[1], b.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn store(self, out: &mut [f64; LANES]) {
        _mm512_storeu_pd(out.as_mut_ptr(), self.0[0]);
        _mm512_storeu_pd(out.as_mut_ptr().add(8), self.0[1]);
    }
    #[inline(always)]
    unsafe fn load(acc: &[f64; LANES]) -> Self {
        Avx512([
            _mm512_loadu_pd(acc.as_ptr()),
            _mm512_loadu_pd(acc.as_ptr().add(8)),
        ])
    }
}

impl Lanes for Avx2 {
    #[inline(always)]
    unsafe fn splat(v: f64) -> Self {
        Avx2([_mm256_set1_pd(v); 4])
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self {
        Avx2(std::array::from_fn(|q| {
            _mm256_cvtps_pd(_mm_loadu_ps(p.add(4 * q)))
        }))
    }
    #[inline(always)]
    unsafe fn load_f32_gated(p: *const f32, gate: *const u8) -> Self {
        let half = |h: usize| {
            let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(gate.add(8 * h).cast()));
            let keep = _mm256_sub_epi32(_mm256_setzero_si256(), bytes);
            let v = _mm256_and_si256(_mm256_loadu_si256(p.add(8 * h).cast()), keep);
            _mm256_castsi256_ps(v)
        };
        let (low, high) = (half(0), half(1));
        Avx2([
            _mm256_cvtps_pd(_mm256_castps256_ps128(low)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(low)),
            _mm256_cvtps_pd(_mm256_castps256_ps128(high)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(high)),
        ])
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx2(std::array::from_fn(|q| _mm256_add_pd(self.0[q], b.0[q])))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx2(std::array::from_fn(|q| _mm256_sub_pd(self.0[q], b.0[q])))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx2(std::array::from_fn(|q| _mm256_mul_pd(self.0[q], b.0[q])))
    }
    #[inline(always)]
    unsafe fn store(self, out: &mut [f64; LANES]) {
        for q in 0..4 {
            _mm256_storeu_pd(out.as_mut_ptr().add(4 * q), self.0[q]);
        }
    }
    #[inline(always)]
    unsafe fn load(acc: &[f64; LANES]) -> Self {
        Avx2(std::array::from_fn(|q| {
            _mm256_loadu_pd(acc.as_ptr().add(4 * q))
        }))
    }
}

/// Lane sums of one channel, its runs (one per sample) in order: `body(at, s1, s2)` adds the
/// terms of the 16 values from index `at` to the two vector sums, `tail(at, l, acc)` those of
/// the value at `at` (in a run's remainder) to lane l of the arrays. Returns the two sums'
/// lanes.
#[inline(always)]
unsafe fn lane_sums<V: Lanes>(
    d: Dims,
    ch: usize,
    mut body: impl FnMut(usize, &mut V, &mut V),
    mut tail: impl FnMut(usize, usize, &mut [[f64; LANES]; 2]),
) -> [[f64; LANES]; 2] {
    let mut acc = [[0.0; LANES]; 2];
    let chunks = d.inner / LANES;
    for s in 0..d.n {
        let start = (s * d.c + ch) * d.inner;
        if chunks > 0 {
            let (mut s1, mut s2) = (V::load(&acc[0]), V::load(&acc[1]));
            for c in 0..chunks {
                body(start + c * LANES, &mut s1, &mut s2);
            }
            s1.store(&mut acc[0]);
            s2.store(&mut acc[1]);
        }
        for i in chunks * LANES..d.inner {
            tail(start + i, i % LANES, &mut acc);
        }
    }
    acc
}

/// Lanes of sum(x - k) and sum((x - k)^2) over channel `ch`: `cpu::channel_moment_impl`'s.
#[inline(always)]
unsafe fn moment_lanes<V: Lanes>(x: &[f32], d: Dims, ch: usize, k: f64) -> [[f64; LANES]; 2] {
    debug_assert_eq!(x.len(), d.n * d.c * d.inner);
    let kv = V::splat(k);
    let body = |at: usize, s1: &mut V, s2: &mut V| {
        // SAFETY: at + 16 <= the end of the run, inside x (lane_sums' chunks).
        let e = V::load_f32(x.as_ptr().add(at)).sub(kv);
        *s1 = s1.add(e);
        *s2 = s2.add(e.mul(e));
    };
    let tail = |at: usize, l: usize, acc: &mut [[f64; LANES]; 2]| {
        let e = x[at] as f64 - k;
        acc[0][l] += e;
        acc[1][l] += e * e;
    };
    lane_sums::<V>(d, ch, body, tail)
}

/// Lanes of sum(g) and sum(g (x - mu)) over channel `ch`, g = dy, or dy gated by the ReLU's
/// mask: `cpu::channel_grad_sum_impl`'s.
#[inline(always)]
unsafe fn grad_lanes<V: Lanes>(
    dy: &[f32],
    gate: Option<&[u8]>,
    x: &[f32],
    d: Dims,
    ch: usize,
    mu: f64,
) -> [[f64; LANES]; 2] {
    debug_assert!(dy.len() == x.len() && gate.is_none_or(|m| m.len() == x.len()));
    let muv = V::splat(mu);
    let body = |at: usize, s1: &mut V, s2: &mut V| {
        // SAFETY: at + 16 <= the end of the run, inside dy, x and the gate (same lengths).
        let g = match gate {
            None => V::load_f32(dy.as_ptr().add(at)),
            Some(m) => V::load_f32_gated(dy.as_ptr().add(at), m.as_ptr().add(at)),
        };
        let xc = V::load_f32(x.as_ptr().add(at)).sub(muv);
        *s1 = s1.add(g);
        *s2 = s2.add(g.mul(xc));
    };
    let tail = |at: usize, l: usize, acc: &mut [[f64; LANES]; 2]| {
        let g = match gate {
            None => dy[at],
            Some(m) => super::cpu::gated(dy[at], m[at]),
        } as f64;
        acc[0][l] += g;
        acc[1][l] += g * (x[at] as f64 - mu);
    };
    lane_sums::<V>(d, ch, body, tail)
}

/// [`moment_lanes`] in AVX-512.
///
/// # Safety
/// The CPU has AVX-512F, VL, BW and DQ.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(super) unsafe fn moment_avx512(x: &[f32], d: Dims, ch: usize, k: f64) -> [[f64; LANES]; 2] {
    moment_lanes::<Avx512>(x, d, ch, k)
}

/// [`moment_lanes`] in AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn moment_avx2(x: &[f32], d: Dims, ch: usize, k: f64) -> [[f64; LANES]; 2] {
    moment_lanes::<Avx2>(x, d, ch, k)
}

/// [`grad_lanes`] in AVX-512.
///
/// # Safety
/// The CPU has AVX-512F, VL, BW and DQ.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(super) unsafe fn grad_avx512(
    dy: &[f32],
    gate: Option<&[u8]>,
    x: &[f32],
    d: Dims,
    ch: usize,
    mu: f64,
) -> [[f64; LANES]; 2] {
    grad_lanes::<Avx512>(dy, gate, x, d, ch, mu)
}

/// [`grad_lanes`] in AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn grad_avx2(
    dy: &[f32],
    gate: Option<&[u8]>,
    x: &[f32],
    d: Dims,
    ch: usize,
    mu: f64,
) -> [[f64; LANES]; 2] {
    grad_lanes::<Avx2>(dy, gate, x, d, ch, mu)
}

//! The x86-64 instruction sets: [`Avx512`] and [`Avx2`], the FMA loops that measure them, and
//! the CPUID brand string.

use std::arch::x86_64::*;

use super::Simd;

/// AVX-512F: 16 lanes, masks in `k` registers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512;

/// AVX2 with FMA: 8 lanes, masks as vectors of all-ones or all-zeros lanes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2;

// SAFETY: every method only executes AVX-512F instructions (the trait's contract says callers
// run it where the CPU has them) and accesses memory as each method's doc allows.
unsafe impl Simd for Avx512 {
    type V = __m512;
    type M = __mmask16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn mask(bits: u32) -> __mmask16 {
        bits as __mmask16
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: __m512, m: __mmask16) {
        _mm512_mask_storeu_ps(p, m, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn reduce(v: __m512) -> f32 {
        // Halves added pairwise down to one lane: the same tree on every call. (The upper half
        // through the f64 view: `_mm512_extractf32x8_ps` needs AVX-512DQ.)
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        Avx2::reduce(_mm256_add_ps(_mm512_castps512_ps256(v), high))
    }
}

// SAFETY: every method only executes AVX, AVX2 and FMA instructions (the trait's contract says
// callers run it where the CPU has them) and accesses memory as each method's doc allows:
// `vmaskmovps` touches only the selected lanes' addresses.
unsafe impl Simd for Avx2 {
    type V = __m256;
    type M = __m256i;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn mask(bits: u32) -> __m256i {
        let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        let set = _mm256_and_si256(_mm256_set1_epi32(bits as i32), lane_bits);
        _mm256_cmpeq_epi32(set, lane_bits)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __m256i) -> __m256 {
        _mm256_maskload_ps(p, m)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: __m256, m: __m256i) {
        _mm256_maskstore_ps(p, m, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn reduce(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)))
    }
}

/// 16 chains of 512-bit FMAs, `iters` times (see `super::fma_rate`).
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn fma_loop_avx512(iters: u64) -> f32 {
    let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm512_set1_ps(std::hint::black_box(1e-6));
    let mut acc = [_mm512_setzero_ps(); 16];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
    Avx512::reduce(sum)
}

/// 12 chains of 256-bit FMAs, `iters` times.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fma_loop_avx2(iters: u64) -> f32 {
    let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm256_set1_ps(std::hint::black_box(1e-6));
    let mut acc = [_mm256_setzero_ps(); 12];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &r| _mm256_add_ps(s, r));
    Avx2::reduce(sum)
}

/// The processor brand string of CPUID leaves 0x80000002 to 0x80000004, trimmed; `None` when
/// the CPU does not report one. (`__cpuid` is an unsafe function before Rust 1.94, safe after.)
#[allow(unused_unsafe)]
pub(super) fn brand_string() -> Option<String> {
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 0x80000000 gives the highest extended leaf.
    let max = unsafe { __cpuid(0x8000_0000) }.eax;
    if max < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002u32..=0x8000_0004 {
        // SAFETY: the leaf is at most the highest one the CPU reports.
        let r = unsafe { __cpuid(leaf) };
        for reg in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
    }
    let name = String::from_utf8_lossy(&bytes)
        .trim_matches(char::from(0))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!name.is_empty()).then_some(name)
}

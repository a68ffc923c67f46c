//! The tensor-core instructions of mma.cuh (and the emulator's model of them, cuda_emu.h) against
//! the PTX ISA's fragment layouts written out here a second time, by hand: one `mma.sync` of each
//! precision, `ldmatrix` in every form, `cp.async` with its groups and zero fill. A kernel that
//! transposes a fragment and one that forgets its `cp.async` wait must fail the comparison. The
//! `gpu_` twins hold the same expectations against a real card.

use crate::cuda::emu::Emu;
use crate::cuda::kernel;
use crate::cuda::launch::{Backend, Kernel, LaunchConfig};
use crate::cuda::parity::{assert_close, compare, on_emu_and_gpu, uniform, HarnessParams, EXACT};
use crate::cuda::source::{LdmatrixHarnessParams, MmaHarnessParams, HARNESS};
use crate::precision::{bf16_round, tf32_round, Bf16};

/// The harness kernels of emu_harness.cu that exercise the tensor-core instructions.
const MMA_TF32_FRAGMENTS: Kernel<MmaHarnessParams> = kernel!(HARNESS, mma_tf32_fragments);
/// The same with b's fragment transposed: it must fail.
const MMA_TF32_FRAGMENTS_TRANSPOSED: Kernel<MmaHarnessParams> =
    kernel!(HARNESS, mma_tf32_fragments_transposed);
const MMA_BF16_FRAGMENTS: Kernel<MmaHarnessParams> = kernel!(HARNESS, mma_bf16_fragments);
const LDMATRIX_FRAGMENTS: Kernel<LdmatrixHarnessParams> = kernel!(HARNESS, ldmatrix_fragments);
const CP_ASYNC_REVERSE: Kernel<HarnessParams> = kernel!(HARNESS, cp_async_reverse);
/// The same without the wait: it must fail.
const CP_ASYNC_REVERSE_NO_WAIT: Kernel<HarnessParams> = kernel!(HARNESS, cp_async_reverse_no_wait);
const CP_ASYNC_GROUPS: Kernel<HarnessParams> = kernel!(HARNESS, cp_async_groups);
const CP_ASYNC_ZERO_FILL: Kernel<HarnessParams> = kernel!(HARNESS, cp_async_zero_fill);

/// One warp's `mma` through `kernel`: d = a b + c with a (16, k), b (k, 8), c (16, 8).
fn run_mma<B: Backend>(
    dev: &B,
    kernel: Kernel<MmaHarnessParams>,
    a: &[f32],
    b: &[f32],
    c: &[f32],
) -> Vec<f32> {
    let (ab, bb, cb) = (
        dev.upload(a).unwrap(),
        dev.upload(b).unwrap(),
        dev.upload(c).unwrap(),
    );
    let mut d = dev.upload(&[f32::NAN; 128]).unwrap();
    let p = MmaHarnessParams {
        d: dev.addr_mut(&mut d),
        a: dev.addr(&ab),
        b: dev.addr(&bb),
        c: dev.addr(&cb),
    };
    // SAFETY: the kernel reads a[16 k], b[8 k] and c[128] and writes d[128], one warp.
    unsafe { dev.launch(kernel, LaunchConfig::linear(1, 32, 0), &p) }.unwrap();
    dev.download(&d).unwrap()
}

/// d = a b + c in f64 (a (16, k), b (k, 8), row-major), and sum |a b| + |c| per element.
fn mma_reference(a: &[f32], b: &[f32], c: &[f32], k: usize) -> (Vec<f32>, Vec<f64>) {
    let mut d = vec![0.0f32; 128];
    let mut magnitude = vec![0.0f64; 128];
    for row in 0..16 {
        for col in 0..8 {
            let (mut sum, mut mag) = (
                f64::from(c[row * 8 + col]),
                f64::from(c[row * 8 + col]).abs(),
            );
            for kk in 0..k {
                let p = f64::from(a[row * k + kk]) * f64::from(b[kk * 8 + col]);
                sum += p;
                mag += p.abs();
            }
            d[row * 8 + col] = sum as f32;
            magnitude[row * 8 + col] = mag;
        }
    }
    (d, magnitude)
}

/// Small integers (exact in TF32 and BF16, and every sum of their products exact in FP32): any
/// output that lands in the wrong place, or any element read from the wrong place, shows.
fn integers(seed: u64, n: usize) -> Vec<f32> {
    uniform(seed, n, -8.0, 8.0)
        .iter()
        .map(|v| v.round())
        .collect()
}

fn mma_fragments<B: Backend>(dev: &B) {
    for (kernel, k, round) in [
        (MMA_TF32_FRAGMENTS, 8, tf32_round as fn(f32) -> f32),
        (MMA_BF16_FRAGMENTS, 16, bf16_round),
    ] {
        let name = kernel.name;
        // Known answers: integer matrices, the exact product.
        let (a, b, c) = (integers(1, 16 * k), integers(2, k * 8), integers(3, 128));
        let (want, _) = mma_reference(&a, &b, &c, k);
        assert_close(name, &run_mma(dev, kernel, &a, &b, &c), &want, EXACT);
        // Random values, rounded by the kernel (tf32_bits / bf16_pair) as the reference rounds
        // them: the products are exact and only the FP32 additions differ in order. Each of the
        // k additions (and c's) rounds with relative error at most u = 2^-24 (2u if the adder
        // truncates), so |d - exact| <= 2 (k + 1) u (|c| + sum |a b|) (Higham's gamma bound).
        let (a, b, c) = (
            uniform(4, 16 * k, -1.0, 1.0),
            uniform(5, k * 8, -1.0, 1.0),
            uniform(6, 128, -1.0, 1.0),
        );
        let (ar, br): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|&v| round(v)).collect(),
            b.iter().map(|&v| round(v)).collect(),
        );
        let (want, magnitude) = mma_reference(&ar, &br, &c, k);
        let got = run_mma(dev, kernel, &a, &b, &c);
        let u = f64::from(f32::EPSILON) / 2.0;
        for i in 0..128 {
            let bound = 2.0 * (k as f64 + 1.0) * u * magnitude[i];
            let err = (f64::from(got[i]) - f64::from(want[i])).abs();
            assert!(
                err <= bound,
                "{name}: element {i}: got {:e}, want {:e} (bound {bound:e})",
                got[i],
                want[i]
            );
        }
        // Unrounded operands would be off by about 2^-11 (TF32) or 2^-8 (BF16) of |a b|: far
        // outside that bound, so the comparison also pins the rounding.
        let (unrounded, _) = mma_reference(&a, &b, &c, k);
        assert!(
            (0..128).any(|i| (unrounded[i] - want[i]).abs() as f64
                > 2.0 * (k as f64 + 1.0) * u * magnitude[i]),
            "{name}: the rounding of the operands would go unnoticed"
        );
    }
}

on_emu_and_gpu!(
    emu_mma_fragments_match_the_ptx_layouts,
    gpu_mma_fragments_match_the_ptx_layouts,
    mma_fragments
);

#[test]
fn emu_harness_reports_a_transposed_fragment() {
    let (a, b, c) = (integers(1, 128), integers(2, 64), integers(3, 128));
    let (want, _) = mma_reference(&a, &b, &c, 8);
    let got = run_mma(&Emu, MMA_TF32_FRAGMENTS_TRANSPOSED, &a, &b, &c);
    let err = compare(&got, &want, EXACT).unwrap_err();
    assert!(err.starts_with("first mismatch at index "), "{err}");
}

/// Lane l's registers of ldmatrix x1, x2, x4 and the same .trans, from the PTX ISA: lane (g, t) =
/// (l / 4, l % 4) receives of matrix i row g, elements 2t and 2t + 1 (low half first); with
/// .trans, rows 2t and 2t + 1 of column g.
fn ldmatrix_expected(x: &[u16]) -> Vec<u32> {
    let at = |i: usize, row: usize, col: usize| u32::from(x[(i * 8 + row) * 8 + col]);
    let mut out = Vec::new();
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        let plain = |i| at(i, g, 2 * t) | at(i, g, 2 * t + 1) << 16;
        let trans = |i| at(i, 2 * t, g) | at(i, 2 * t + 1, g) << 16;
        out.extend([
            plain(0),
            plain(0),
            plain(1),
            plain(0),
            plain(1),
            plain(2),
            plain(3),
        ]);
        out.extend([
            trans(0),
            trans(0),
            trans(1),
            trans(0),
            trans(1),
            trans(2),
            trans(3),
        ]);
    }
    out
}

fn ldmatrix_layouts<B: Backend>(dev: &B) {
    // 256 distinct 16-bit values (a BF16 buffer carries them), so any element out of place shows.
    let x: Vec<u16> = (0..256u16).map(|v| v * 251 + 7).collect();
    let xb = dev
        .upload(&x.iter().map(|&v| Bf16(v)).collect::<Vec<_>>())
        .unwrap();
    let mut out = dev.alloc::<u32>(32 * 14).unwrap();
    let p = LdmatrixHarnessParams {
        out: dev.addr_mut(&mut out),
        x: dev.addr(&xb),
    };
    // SAFETY: one warp reads x[256] and writes out[32 * 14].
    unsafe { dev.launch(LDMATRIX_FRAGMENTS, LaunchConfig::linear(1, 32, 0), &p) }.unwrap();
    let got = dev.download(&out).unwrap();
    let want = ldmatrix_expected(&x);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g,
            w,
            "ldmatrix: lane {} register {} is {g:#010x}, want {w:#010x}",
            i / 14,
            i % 14
        );
    }
}

on_emu_and_gpu!(
    emu_ldmatrix_matches_the_ptx_layout,
    gpu_ldmatrix_matches_the_ptx_layout,
    ldmatrix_layouts
);

/// A harness kernel of `HarnessParams` (y, x, n) on `dev`: x in, y (out_len values, NaN before) out.
fn run_harness<B: Backend>(
    dev: &B,
    kernel: Kernel<HarnessParams>,
    x: &[f32],
    out_len: usize,
    cfg: LaunchConfig,
) -> Vec<f32> {
    let xb = dev.upload(x).unwrap();
    let mut y = dev.upload(&vec![f32::NAN; out_len]).unwrap();
    let p = HarnessParams {
        y: dev.addr_mut(&mut y),
        x: dev.addr(&xb),
        n: x.len() as u32,
    };
    // SAFETY: each cp.async harness kernel reads x and writes y within the lengths its comment
    // gives for this configuration.
    unsafe { dev.launch(kernel, cfg, &p) }.unwrap();
    dev.download(&y).unwrap()
}

fn cp_async_copies<B: Backend>(dev: &B) {
    let (threads, blocks) = (128u32, 4u32);
    let n = (threads * blocks) as usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let want: Vec<f32> = x
        .chunks(threads as usize)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    let cfg = LaunchConfig::linear(blocks, threads, threads * 4);
    assert_close(
        "cp.async reverse",
        &run_harness(dev, CP_ASYNC_REVERSE, &x, n, cfg),
        &want,
        EXACT,
    );
    // Zero fill: thread t's 16 bytes hold 4 (t % 5) bytes of x, then zeros.
    let x = uniform(7, 4 * 64, 1.0, 2.0);
    let got = run_harness(
        dev,
        CP_ASYNC_ZERO_FILL,
        &x,
        4 * 64,
        LaunchConfig::linear(1, 64, 64 * 16),
    );
    let want: Vec<f32> = (0..4 * 64)
        .map(|i| if i % 4 < (i / 4) % 5 { x[i] } else { 0.0 })
        .collect();
    assert_close("cp.async zero fill", &got, &want, EXACT);
}

on_emu_and_gpu!(
    emu_cp_async_copies_and_zero_fills,
    gpu_cp_async_copies_and_zero_fills,
    cp_async_copies
);

/// The emulator lands a copy only at its thread's wait: a kernel that reads without waiting reads
/// the poison (every time, not by chance), and wait_group 1 leaves the newest group in flight.
#[test]
fn emu_a_missing_cp_async_wait_is_caught() {
    let threads = 64u32;
    let x: Vec<f32> = (0..2 * threads).map(|i| i as f32).collect();
    let cfg = LaunchConfig::linear(2, threads, threads * 4);
    let want: Vec<f32> = x
        .chunks(threads as usize)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    let got = run_harness(&Emu, CP_ASYNC_REVERSE_NO_WAIT, &x, x.len(), cfg);
    assert!(
        got.iter().all(|v| v.is_nan()),
        "read before the wait: {got:?}"
    );
    assert!(compare(&got, &want, EXACT).is_err());

    let got = run_harness(
        &Emu,
        CP_ASYNC_GROUPS,
        &x,
        x.len(),
        LaunchConfig::linear(1, threads, 2 * threads * 4),
    );
    let t = threads as usize;
    assert_close("the older group, waited for", &got[..t], &x[..t], EXACT);
    assert!(
        got[t..].iter().all(|v| v.is_nan()),
        "the newest group landed early: {:?}",
        &got[t..]
    );
}

/// The rounding in mma.cuh (tf32_bits, bf16_pair) is the CPU's (crate::precision, whose own
/// tests pin it to known answers), ties included: b is the identity (its first 8 columns for
/// BF16), so d(row, col) = round(a(row, col)) exactly.
fn rounding_matches_the_cpu<B: Backend>(dev: &B) {
    let mut identity = vec![0.0f32; 128];
    for i in 0..8 {
        identity[i * 8 + i] = 1.0;
    }
    // TF32 ties away from zero: 1 + 2^-11 up, -(1 + 3 2^-11) down.
    let ties = [1.0 + 2f32.powi(-11), -(1.0 + 3.0 * 2f32.powi(-11))];
    let a: Vec<f32> = ties.into_iter().chain(uniform(8, 126, -3.0, 3.0)).collect();
    let got = run_mma(dev, MMA_TF32_FRAGMENTS, &a, &identity[..64], &[0.0; 128]);
    let want: Vec<f32> = a.iter().map(|&v| tf32_round(v)).collect();
    assert_close("tf32 rounding", &got, &want, EXACT);
    // BF16 ties to even: 1 + 2^-8 down to 1, 1 + 3 2^-8 up to 1 + 2^-6.
    let ties = [1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)];
    let a: Vec<f32> = ties.into_iter().chain(uniform(9, 254, -3.0, 3.0)).collect();
    let got = run_mma(dev, MMA_BF16_FRAGMENTS, &a, &identity, &[0.0; 128]);
    let want: Vec<f32> = (0..128)
        .map(|i| bf16_round(a[(i / 8) * 16 + i % 8]))
        .collect();
    assert_close("bf16 rounding", &got, &want, EXACT);
    assert_eq!((want[0], want[1]), (1.0, 1.0 + 2f32.powi(-6)));
}

on_emu_and_gpu!(
    emu_tf32_and_bf16_rounding_match_the_cpu,
    gpu_tf32_and_bf16_rounding_match_the_cpu,
    rounding_matches_the_cpu
);

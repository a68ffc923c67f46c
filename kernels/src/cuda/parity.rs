//! The parity suite's comparison: the same seeded input through the CPU and a CUDA version of an
//! op, compared elementwise with named tolerances; a failure names the first bad index and both
//! values. Every op's `cuda_tests.rs` uses it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Bit-identical: the kernel does the CPU's arithmetic in the CPU's order, one rounding per op.
pub(crate) const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};

/// |gpu - cpu| <= atol + rtol * |cpu|, elementwise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tol {
    pub atol: f32,
    pub rtol: f32,
}

/// The first index where `gpu` and `cpu` differ by more than `tol` (NaN never passes), with both
/// values, or `Ok` when every value is within it.
pub(crate) fn compare(gpu: &[f32], cpu: &[f32], tol: Tol) -> Result<(), String> {
    if gpu.len() != cpu.len() {
        return Err(format!("gpu has {} values, cpu {}", gpu.len(), cpu.len()));
    }
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let ok = (g - c).abs() <= tol.atol + tol.rtol * c.abs() || (g.is_infinite() && g == c);
        if !ok {
            return Err(format!(
                "first mismatch at index {i}: gpu {g:e}, cpu {c:e} (tolerance {tol:?})"
            ));
        }
    }
    Ok(())
}

/// Panics with `what` and [`compare`]'s message unless `gpu` matches `cpu` within `tol`.
#[track_caller]
pub(crate) fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: Tol) {
    if let Err(msg) = compare(gpu, cpu, tol) {
        panic!("{what}: {msg}");
    }
}

/// `n` values uniform in [lo, hi) from `seed`.
pub(crate) fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

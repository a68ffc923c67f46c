//! The instruction set of the hand-written CPU kernels, picked at run time.
//!
//! One binary runs on every x86-64 machine: each hand-written kernel is compiled once per
//! instruction set, inside functions marked `#[target_feature]`, from one generic body written
//! against the [`Simd`] trait, and [`isa`] says which of them this machine runs. Nothing is
//! compiled for the build machine's CPU (`target-cpu=native` would make a binary that faults
//! elsewhere).
//!
//! The choice ([`choice`], made once per process):
//! - `KERNELS_ISA=avx512|avx2|portable` in the environment forces one (tests, comparisons), if
//!   this CPU has it;
//! - otherwise AVX-512 wherever the CPU has it (AVX-512F, VL, BW and DQ). Cores with two full
//!   512-bit FMA units (Intel Xeon from Skylake-SP on) run twice AVX2's FLOP rate with it. Cores
//!   that split a 512-bit FMA into two 256-bit halves (AMD Zen 4) run the same FLOP rate and still
//!   gain: its 32 vector registers hold 24 accumulators where AVX2's 16 hold 8, its mask
//!   registers free vector registers, and each instruction does twice the work for the same front
//!   end. Measured on a Zen 4 EPYC, 2 threads (BENCHMARKS.md, "AVX-512 on Zen 4"): the AVX-512
//!   kernels train the seed network 10 to 20% faster than the AVX2 ones, `small` 15 to 50%,
//!   `tiny` 15 to 20%. The choice reads the CPU's features only, never a timing: a choice made by
//!   measurement could differ between two processes of one machine on a busy host, and with it
//!   the rounding, which would break a resumed run's bit-identity. (Until 2026-12-03 a short FMA
//!   loop decided, asking for a 1.4x gain, and gave Zen 4 the AVX2 kernels; the loop's rates are
//!   still measured, for [`IsaChoice::reason`].)
//! - otherwise AVX2 with FMA, otherwise the portable kernels (plain Rust on small arrays, the
//!   same arithmetic in the same order as the others, for any other CPU).
//!
//! The `gemm` crate makes its own choice (its AVX-512 kernels wherever `avx512f` is present).

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;
use std::time::Instant;

pub(crate) use portable::Portable;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

/// An instruction set the hand-written kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512 (F, VL, BW, DQ, with AVX2 and FMA): 16 f32 lanes, 32 vector registers, lane
    /// masks.
    Avx512,
    /// AVX2 and FMA: 8 f32 lanes, 16 vector registers.
    Avx2,
    /// Plain Rust on arrays of 8 values: any CPU.
    Portable,
}

/// From this ratio of the two FMA rates on, [`choice`]'s reason names two full-width FMA units.
const FULL_WIDTH_RATIO: f64 = 1.4;

impl Isa {
    /// Every instruction set, widest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// `avx512`, `avx2` or `portable` (the values of `KERNELS_ISA`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// f32 values per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 | Isa::Portable => 8,
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            // F for the kernels; VL, BW and DQ for the compiler's own vectorisation in
            // `multiversion!` (every AVX-512 CPU but Xeon Phi has them).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            Isa::Portable => true,
        }
    }

    /// The instruction sets this CPU runs, widest first.
    pub fn available_all() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction set the kernels run, and why it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct IsaChoice {
    pub isa: Isa,
    /// One line: the measured FMA rates or the environment variable that decided.
    pub reason: String,
}

/// The instruction set the hand-written kernels run in this process (see the module doc): read
/// from the CPU's features and `KERNELS_ISA` alone, so it times nothing; only [`choice`]'s
/// reason measures the FMA rates, for the programs that print it.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    // The rates only fill the reason, which is dropped here (test
    // `avx512_wherever_present_whatever_the_timing`).
    *ISA.get_or_init(|| choose(std::env::var("KERNELS_ISA").ok().as_deref(), |_| f64::NAN).isa)
}

/// [`isa`] with its reason; measured on the first call (a few milliseconds), then kept.
pub fn choice() -> &'static IsaChoice {
    static CHOICE: OnceLock<IsaChoice> = OnceLock::new();
    CHOICE.get_or_init(|| choose(std::env::var("KERNELS_ISA").ok().as_deref(), fma_rate))
}

/// The rule of [`choice`], with the environment's `KERNELS_ISA` value and the rate measurement
/// passed in (tests give their own).
fn choose(forced: Option<&str>, rate: impl Fn(Isa) -> f64) -> IsaChoice {
    let mut note = String::new();
    if let Some(name) = forced {
        match Isa::ALL.into_iter().find(|i| i.name() == name) {
            Some(isa) if isa.available() => {
                return IsaChoice {
                    isa,
                    reason: format!("KERNELS_ISA={name}"),
                }
            }
            Some(_) => note = format!(" (KERNELS_ISA={name} ignored: this CPU lacks it)"),
            None => {
                note = format!(" (KERNELS_ISA={name:?} ignored: not one of avx512, avx2, portable)")
            }
        }
    }
    let (isa, reason) = match (Isa::Avx512.available(), Isa::Avx2.available()) {
        (true, true) => {
            let (wide, narrow) = (rate(Isa::Avx512), rate(Isa::Avx2));
            let gain = wide / narrow;
            let units = if gain >= FULL_WIDTH_RATIO {
                "two full-width FMA units"
            } else {
                "512-bit FMAs split in halves: 32 registers and masks still pay"
            };
            (
                Isa::Avx512,
                format!(
                    "one thread's FMA loop: 512-bit {wide:.0} GFLOP/s, 256-bit {narrow:.0} \
                     GFLOP/s, {gain:.2}x ({units})"
                ),
            )
        }
        (_, true) => (Isa::Avx2, "AVX2 and FMA, no AVX-512F".to_string()),
        _ => (Isa::Portable, "no AVX2 with FMA".to_string()),
    };
    IsaChoice {
        isa,
        reason: reason + &note,
    }
}

/// Independent chains of vector FMAs in `isa`'s loop: enough to cover a 4-cycle FMA latency on
/// two units (8), within the 16 registers of AVX2.
fn chains(isa: Isa) -> u64 {
    match isa {
        Isa::Avx2 => 12,
        Isa::Avx512 | Isa::Portable => 16,
    }
}

/// FLOPs of one call of `isa`'s FMA loop with `iters` iterations: 2 per lane of each chain.
fn loop_flops(isa: Isa, iters: u64) -> f64 {
    (iters * chains(isa) * isa.lanes() as u64 * 2) as f64
}

/// Runs `isa`'s FMA loop; the result only keeps the compiler from removing it.
fn fma_loop(isa: Isa, iters: u64) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked `isa.available()`.
        Isa::Avx512 => unsafe { x86::fma_loop_avx512(iters) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::fma_loop_avx2(iters) },
        _ => portable::fma_loop(iters),
    }
}

/// Iterations of one timed FMA loop: about 0.1 to 0.5 ms on a current core.
const LOOP_ITERS: u64 = 50_000;
/// Timed loops per measurement; the fastest counts (a loop that lost its core to another
/// process is slower, never faster).
const LOOP_REPEATS: usize = 7;
/// Timed rounds of [`fma_peak`]: more, since every thread must have its core to itself in the
/// same round (about 0.2 ms each, 10 ms in all), in [`PEAK_BURSTS`] bursts.
const PEAK_REPEATS: usize = 50;
/// [`fma_peak`]'s rounds come in this many bursts 20 ms apart, so that a neighbour holding a
/// core for a few milliseconds (a shared host) spoils one burst, not the measurement: on a
/// 2-vCPU EPYC one `trainer bench` run in a dozen measured half the peak in a single burst.
const PEAK_BURSTS: usize = 5;

/// One thread's FMA rate with `isa`'s vectors, in GFLOP/s: the best of a few short loops.
/// `isa` must be available.
pub fn fma_rate(isa: Isa) -> f64 {
    assert!(isa.available(), "fma_rate: this CPU lacks {isa}");
    fma_loop(isa, LOOP_ITERS / 10);
    let best = (0..LOOP_REPEATS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(fma_loop(isa, LOOP_ITERS));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    loop_flops(isa, LOOP_ITERS) / best / 1e9
}

/// The machine's FMA peak with `isa`'s vectors, in GFLOP/s: every thread of the current rayon
/// pool runs the loop at once (the best of a few rounds, each timed to its slowest thread).
/// `isa` must be available.
pub fn fma_peak(isa: Isa) -> f64 {
    assert!(isa.available(), "fma_peak: this CPU lacks {isa}");
    let threads = rayon::current_num_threads();
    rayon::broadcast(|_| fma_loop(isa, LOOP_ITERS / 10));
    let best = (0..PEAK_REPEATS)
        .map(|round| {
            if round > 0 && round % (PEAK_REPEATS / PEAK_BURSTS) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let t = Instant::now();
            rayon::broadcast(|_| std::hint::black_box(fma_loop(isa, LOOP_ITERS)));
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    threads as f64 * loop_flops(isa, LOOP_ITERS) / best / 1e9
}

/// The CPU's name: the CPUID brand string on x86-64 (`Intel(R) Xeon(R) ...`, `AMD EPYC ...`),
/// else the `model name` of /proc/cpuinfo, else "unknown CPU".
pub fn cpu_model() -> String {
    #[cfg(target_arch = "x86_64")]
    if let Some(name) = x86::brand_string() {
        return name;
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|v| v.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// Defines `fn $name(isa: Isa, args...)`, which runs `$inner(args...)` compiled for `isa`: the
/// same Rust code, which the compiler vectorises with AVX-512 or AVX2 instructions inside
/// `#[target_feature]` copies. `$inner` must be `#[inline(always)]` (and what it calls, where it
/// matters), so that its body is compiled inside each copy; it must be safe to call on any CPU
/// (plain Rust). Without `mul_add` the compiler never fuses a multiply and an add, so every copy
/// rounds as the plain one does: the results are bit-identical across instruction sets.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident = $inner:ident($($arg:ident: $ty:ty),* $(,)?)
        $(-> $ret:ty)?) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                $inner($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                $inner($($arg),*)
            }
            match isa {
                // SAFETY: `isa` is available (`Isa::available` or `simd::isa`); the CPU has
                // the features the copy was compiled for.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::simd::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => $inner($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// The vector operations the hand-written kernels are written in. Every method is
/// `#[inline(always)]`: a generic kernel body is inlined, whole, into a function compiled with
/// the instruction set's `#[target_feature]` (see [`Simd`]'s implementors), never called on its
/// own.
///
/// # Safety
/// Every method may execute the instruction set's instructions: callers run only on a CPU that
/// has it, inside a function compiled for it. Pointer arguments follow each method's contract.
pub(crate) unsafe trait Simd: Copy {
    /// A vector of f32 ([`Isa::lanes`] of them).
    type V: Copy;
    /// A selection of lanes.
    type M: Copy;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// The lanes whose bit (bit l for lane l) is set in `bits`.
    unsafe fn mask(bits: u32) -> Self::M;
    /// Reads the selected lanes at `p` (0 in the others). Only the selected lanes' addresses are
    /// accessed: they must be valid, the others may lie outside any allocation (compute `p` with
    /// `wrapping_offset`).
    unsafe fn load_masked(p: *const f32, m: Self::M) -> Self::V;
    /// Writes the selected lanes of `v` at `p`; only their addresses are accessed.
    unsafe fn store_masked(p: *mut f32, v: Self::V, m: Self::M);
    /// a * b + c with one rounding.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The sum of the lanes, in a fixed order.
    unsafe fn reduce(v: Self::V) -> f32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_isa_is_taken_when_available_and_named_when_refused() {
        let rate = |isa: Isa| if isa == Isa::Avx512 { 200.0 } else { 100.0 };
        let forced = choose(Some("portable"), rate);
        assert_eq!(forced.isa, Isa::Portable);
        assert_eq!(forced.reason, "KERNELS_ISA=portable");
        let bad = choose(Some("sse9"), rate);
        assert!(
            bad.reason
                .ends_with("(KERNELS_ISA=\"sse9\" ignored: not one of avx512, avx2, portable)"),
            "{}",
            bad.reason
        );
    }

    #[test]
    fn avx512_wherever_present_whatever_the_timing() {
        if !(Isa::Avx512.available() && Isa::Avx2.available()) {
            return;
        }
        let full = choose(None, |isa| if isa == Isa::Avx512 { 200.0 } else { 100.0 });
        assert_eq!(full.isa, Isa::Avx512, "{}", full.reason);
        assert!(full.reason.contains("two full-width"), "{}", full.reason);
        let split = choose(None, |isa| if isa == Isa::Avx512 { 98.0 } else { 100.0 });
        assert_eq!(split.isa, Isa::Avx512, "{}", split.reason);
        assert!(split.reason.contains("0.98x"), "{}", split.reason);
        assert!(split.reason.contains("split in halves"), "{}", split.reason);
        // A disturbed measurement changes the reason's figures, never the choice.
        let disturbed = choose(None, |isa| if isa == Isa::Avx512 { 30.0 } else { 100.0 });
        assert_eq!(disturbed.isa, Isa::Avx512, "{}", disturbed.reason);
    }

    #[test]
    fn the_fma_loops_run_and_count_flops() {
        for isa in Isa::available_all() {
            let r = fma_rate(isa);
            assert!(r.is_finite() && r > 0.0, "{isa}: {r} GFLOP/s");
        }
        assert!(!cpu_model().is_empty());
    }
}

//! The reduced-precision number formats of the tensor-core paths, rounded on the CPU exactly as
//! the GPU rounds them, so that a CPU reference can round its operands the same way and leave
//! only the accumulation order to a test's tolerance.
//!
//! - TF32: FP32's sign and 8-bit exponent with 10 of its 23 mantissa bits, kept in an FP32
//!   container whose 13 low bits are zero. [`tf32_round`] is `cvt.rna.tf32.f32`: round to
//!   nearest, ties away from zero.
//! - BF16: the upper 16 bits of an FP32 (7 mantissa bits). [`Bf16::from_f32`] is
//!   `__float2bfloat16_rn`: round to nearest, ties to even; [`Bf16::to_f32`] is exact.
//!
//! Unit roundoff (half the spacing of the numbers around 1, the bound on a rounding's relative
//! error): [`TF32_UNIT_ROUNDOFF`] = 2^-11, [`BF16_UNIT_ROUNDOFF`] = 2^-8, FP32's 2^-24.
//!
//! [`cuda`] does the same conversions on the device (`precision.cu`).

pub mod cuda;

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use tensor_core::Device;

use crate::cuda::Elem;
use crate::{Error, Result};

/// The number format of a model's convolution and linear products: the operands of their GEMMs
/// (and nothing else: weights, optimizer state, batch-norm statistics, the loss and the gradient
/// norm stay FP32 in every mode, and so do the products' outputs and accumulators).
/// - `Fp32`: the FP32 kernels, on every device.
/// - `Tf32`: tensor cores, operands rounded to TF32 ([`tf32_round`]) in the kernel.
/// - `Bf16`: tensor cores (or AVX-512 BF16 on the CPU), operands copied to BF16
///   ([`Bf16::from_f32`]) before each product.
///
/// Tensor-core modes run on a CUDA device of compute capability 8.0 (sm_80) or newer, and on the
/// emulated device; the CPU runs `Fp32`, and `Bf16` where it has AVX-512 BF16 (the convolutions
/// by `vdpbf16ps` kernels, `conv2d/sliding/bf16.rs`; other products in FP32 on operands rounded
/// to BF16) ([`Precision::check_device`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
    Bf16,
}

impl Precision {
    /// Every mode, FP32 first.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// The lower-case name the command line and config files use: `fp32`, `tf32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `Err` if `device` cannot run this mode: TF32 on the CPU, BF16 on a CPU without AVX-512
    /// BF16 (or with `KERNELS_ISA` below avx512), a tensor-core mode on a GPU older than sm_80
    /// (the message names the mode, the device and what it lacks).
    ///
    /// # Errors
    /// [`Error::Invalid`] as above; [`Error::Device`] if the GPU cannot be opened.
    pub fn check_device(self, device: Device) -> Result<()> {
        const OP: &str = "precision";
        let mode = self.name();
        match (self, device) {
            (Precision::Fp32, _) | (_, Device::CudaEmu) => Ok(()),
            (Precision::Tf32, Device::Cpu) => Err(Error::Invalid {
                op: OP,
                msg: "the CPU has no TF32 arithmetic (it runs fp32, and bf16 where it has AVX-512 BF16)"
                    .into(),
            }),
            (Precision::Bf16, Device::Cpu) => Self::cpu_bf16(OP),
            (_, Device::Cuda(ordinal)) => {
                let gpu = crate::cuda::gpu::Gpu::shared(ordinal)?;
                let (major, minor) = gpu.compute_capability();
                if major >= 8 {
                    return Ok(());
                }
                Err(Error::Invalid {
                    op: OP,
                    msg: format!(
                        "{mode} needs tensor cores of compute capability 8.0 (sm_80) or newer; \
                         GPU {ordinal} ({}) has compute capability {major}.{minor}",
                        gpu.name()?
                    ),
                })
            }
        }
    }

    /// `Err` naming `op` unless this CPU runs the BF16 kernels.
    fn cpu_bf16(op: &'static str) -> Result<()> {
        if crate::conv2d::bf16_available() {
            return Ok(());
        }
        Err(Error::Invalid {
            op,
            msg: format!(
                "bf16 on the CPU needs AVX-512 BF16 (avx512_bf16 in /proc/cpuinfo) and the \
                 avx512 kernels; this CPU runs {} kernels{}",
                crate::simd::isa(),
                if crate::simd::isa() == crate::simd::Isa::Avx512 {
                    " without BF16"
                } else {
                    ""
                }
            ),
        })
    }

    /// What a CPU product that is not a BF16 kernel does with its operands in this mode: `None`
    /// in FP32 (use them as they are), their copies rounded to BF16 in BF16 (the values a BF16
    /// kernel would multiply), and `Err` naming `op` for TF32 or for BF16 where
    /// [`Precision::check_device`] refuses it.
    pub(crate) fn cpu_operands<const N: usize>(
        self,
        op: &'static str,
        operands: [&[f32]; N],
    ) -> Result<Option<[Vec<f32>; N]>> {
        match self {
            Precision::Fp32 => Ok(None),
            Precision::Bf16 => {
                Self::cpu_bf16(op)?;
                Ok(Some(
                    operands.map(|xs| xs.iter().map(|&x| bf16_round(x)).collect()),
                ))
            }
            Precision::Tf32 => Err(Error::Invalid {
                op,
                msg: "precision tf32: the CPU has no TF32 arithmetic".into(),
            }),
        }
    }
}

/// Relative error bound of one rounding to TF32 (10 mantissa bits): 2^-11.
pub const TF32_UNIT_ROUNDOFF: f32 = 1.0 / 2048.0;
/// Relative error bound of one rounding to BF16 (7 mantissa bits): 2^-8.
pub const BF16_UNIT_ROUNDOFF: f32 = 1.0 / 256.0;

/// `x` rounded to TF32 as `cvt.rna.tf32.f32` rounds it: to nearest with ties away from zero,
/// subnormals on the same grid (no flush), overflow past the largest TF32 value to infinity,
/// infinities kept, NaN to the canonical NaN `0x7FFF_FFFF`.
pub fn tf32_round(x: f32) -> f32 {
    let u = x.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return f32::from_bits(0x7FFF_FFFF);
    }
    // Half a TF32 unit added to the magnitude bits, then the 13 low bits cut: ties go up in
    // magnitude, that is away from zero; a carry into the exponent is the correct rounding
    // (up to the next binade, or to infinity from the largest values).
    f32::from_bits(u.wrapping_add(0x1000) & 0xFFFF_E000)
}

/// A BF16 value, as its 16 bits: what a BF16 device buffer holds.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// `x` rounded to BF16 as `__float2bfloat16_rn` rounds it: to nearest, ties to even;
    /// subnormals on the same grid, overflow to infinity, NaN to the canonical `0x7FFF`.
    pub fn from_f32(x: f32) -> Bf16 {
        let u = x.to_bits();
        if u & 0x7FFF_FFFF > 0x7F80_0000 {
            return Bf16(0x7FFF);
        }
        // Add just under half a BF16 unit, plus the kept part's lowest bit: exact halves round
        // up when that bit is odd and down when it is even.
        let rounded = u.wrapping_add(0x7FFF + ((u >> 16) & 1));
        Bf16((rounded >> 16) as u16)
    }

    /// The value as FP32 (every BF16 value is one).
    pub fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
}

/// `x` rounded to BF16 and back: the FP32 value a BF16 operand stands for.
pub fn bf16_round(x: f32) -> f32 {
    Bf16::from_f32(x).to_f32()
}

/// Every value of `xs` rounded to BF16 (what a mixed-precision copy of a tensor holds).
pub fn to_bf16(xs: &[f32]) -> Vec<Bf16> {
    xs.iter().map(|&x| Bf16::from_f32(x)).collect()
}

// SAFETY: a plain 16-bit integer in a transparent wrapper, the C `bf16_t` (unsigned short).
unsafe impl DeviceRepr for Bf16 {}
// SAFETY: all-zero bits are the BF16 value +0.
unsafe impl ValidAsZeroBits for Bf16 {}
impl Elem for Bf16 {}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input bits, expected TF32 bits): known answers worked out by hand from the bit patterns.
    const TF32_CASES: &[(u32, u32, &str)] = &[
        (0x3F80_0000, 0x3F80_0000, "1.0 is exact"),
        (
            0x3F80_0FFF,
            0x3F80_0000,
            "just under half a unit rounds down",
        ),
        (0x3F80_1000, 0x3F80_2000, "a tie rounds away from zero (up)"),
        (
            0xBF80_1000,
            0xBF80_2000,
            "a negative tie rounds away from zero (down)",
        ),
        (
            0x3F80_5000,
            0x3F80_6000,
            "a tie with an even last bit goes away too (to even: 0x3F80_4000)",
        ),
        (0x3F80_1001, 0x3F80_2000, "just over half a unit rounds up"),
        (
            0x3FFF_F000,
            0x4000_0000,
            "a carry into the exponent: 1.99999 to 2.0",
        ),
        (
            0x7F7F_FFFF,
            0x7F80_0000,
            "the largest FP32 overflows to infinity",
        ),
        (0x7F7F_EFFF, 0x7F7F_E000, "the largest TF32 stays"),
        (0x7F80_0000, 0x7F80_0000, "infinity stays"),
        (0xFF80_0000, 0xFF80_0000, "minus infinity stays"),
        (
            0x0000_1000,
            0x0000_2000,
            "a subnormal tie rounds away (no flush to zero)",
        ),
        (
            0x0000_0FFF,
            0x0000_0000,
            "a subnormal under half a unit rounds to zero",
        ),
        (0x8000_0FFF, 0x8000_0000, "and keeps its sign"),
        (
            0x007F_F000,
            0x0080_0000,
            "the largest subnormals round up to the smallest normal",
        ),
    ];

    #[test]
    fn tf32_round_known_answers() {
        for &(input, want, what) in TF32_CASES {
            let got = tf32_round(f32::from_bits(input)).to_bits();
            assert_eq!(
                got, want,
                "{what}: {input:#010x} -> {got:#010x}, want {want:#010x}"
            );
        }
        assert_eq!(tf32_round(f32::NAN).to_bits(), 0x7FFF_FFFF);
        assert_eq!(
            tf32_round(f32::from_bits(0x7F80_0001)).to_bits(),
            0x7FFF_FFFF
        );
        assert_eq!(
            tf32_round(f32::from_bits(0xFFC0_0000)).to_bits(),
            0x7FFF_FFFF
        );
    }

    /// `round` over 100,000 spread bit patterns (finite, under 1e38): results with the bits of
    /// `dropped` zero, idempotent, and within `unit` (the unit roundoff) of x relative, or
    /// `half_spacing` absolute among subnormals.
    fn rounds_within_half_a_unit(
        round: fn(f32) -> f32,
        dropped: u32,
        unit: f32,
        half_spacing: f64,
        mut state: u64,
    ) {
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let x = f32::from_bits((state >> 32) as u32);
            if !x.is_finite() || x.abs() > 1e38 {
                continue;
            }
            let r = round(x);
            assert_eq!(
                r.to_bits() & dropped,
                0,
                "{x:e} -> {r:e} keeps dropped bits"
            );
            assert_eq!(round(r), r, "rounding {r:e} again changed it");
            let err = (f64::from(r) - f64::from(x)).abs();
            let bound = (f64::from(x).abs() * f64::from(unit)).max(half_spacing);
            assert!(err <= bound, "{x:e} -> {r:e}: error {err:e} over {bound:e}");
        }
    }

    #[test]
    fn tf32_round_is_within_half_a_unit_and_idempotent() {
        // TF32 subnormals are 2^-136 apart (2^-149 times the 13 dropped bits' 2^13).
        rounds_within_half_a_unit(
            tf32_round,
            0x1FFF,
            TF32_UNIT_ROUNDOFF,
            2f64.powi(-137),
            0x1234_5678_9abc_def0,
        );
    }

    /// (input bits, expected BF16 bits).
    const BF16_CASES: &[(u32, u16, &str)] = &[
        (0x3F80_0000, 0x3F80, "1.0 is exact"),
        (0x3F80_7FFF, 0x3F80, "just under half a unit rounds down"),
        (
            0x3F80_8000,
            0x3F80,
            "a tie with an even last bit stays (to even)",
        ),
        (
            0x3F81_8000,
            0x3F82,
            "a tie with an odd last bit rounds up (to even)",
        ),
        (0xBF81_8000, 0xBF82, "negative ties to even likewise"),
        (0x3F80_8001, 0x3F81, "just over half a unit rounds up"),
        (0x3FFF_8000, 0x4000, "a carry into the exponent"),
        (0x7F7F_7FFF, 0x7F7F, "the largest BF16 region rounds down"),
        (
            0x7F7F_8000,
            0x7F80,
            "the tie above the largest BF16 overflows to infinity",
        ),
        (
            0x7F7F_FFFF,
            0x7F80,
            "the largest FP32 overflows to infinity",
        ),
        (
            0xFF7F_FFFF,
            0xFF80,
            "and the most negative to minus infinity",
        ),
        (0x7F80_0000, 0x7F80, "infinity stays"),
        (
            0x0000_8000,
            0x0000,
            "a subnormal tie to even (down to zero)",
        ),
        (0x0001_8000, 0x0002, "a subnormal tie to even (up)"),
        (
            0x8000_0001,
            0x8000,
            "a tiny negative subnormal to minus zero",
        ),
    ];

    #[test]
    fn bf16_known_answers() {
        for &(input, want, what) in BF16_CASES {
            let got = Bf16::from_f32(f32::from_bits(input)).0;
            assert_eq!(
                got, want,
                "{what}: {input:#010x} -> {got:#06x}, want {want:#06x}"
            );
        }
        assert_eq!(Bf16::from_f32(f32::NAN).0, 0x7FFF);
        assert_eq!(Bf16::from_f32(f32::from_bits(0xFF80_0001)).0, 0x7FFF);
        // Back to FP32 exactly, infinity and NaN included.
        assert_eq!(Bf16(0x3F82).to_f32(), 1.015_625);
        assert_eq!(Bf16(0xFF80).to_f32(), f32::NEG_INFINITY);
        assert!(Bf16(0x7FFF).to_f32().is_nan());
        assert_eq!(bf16_round(3.0), 3.0);
        assert_eq!(to_bf16(&[1.0, -2.0]), vec![Bf16(0x3F80), Bf16(0xC000)]);
    }

    #[test]
    fn bf16_round_is_within_half_a_unit_and_idempotent() {
        // BF16 subnormals are 2^-133 apart.
        rounds_within_half_a_unit(
            bf16_round,
            0xFFFF,
            BF16_UNIT_ROUNDOFF,
            2f64.powi(-134),
            0x0fed_cba9_8765_4321,
        );
    }
}

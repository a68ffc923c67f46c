//! The reduced-precision conversions on the device (`precision.cu`), bit for bit the CPU's of
//! [`super`]: f32 to [`Bf16`] and back, and f32 rounded to TF32. Launch code over [`Backend`],
//! for the mixed-precision copies of weights and activations.

use super::Bf16;
use crate::cuda::launch::{count, params};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Elem, Kernel, LaunchConfig};
use crate::{Error, Result};

/// precision.cu, embedded, and the Rust twin of its parameter struct.
pub const MODULE: Module = module!(precision, headers: [], params: [ConvertParams]);

params! {
    /// precision.cu `ConvertParams`: x: (n) -> out: (n).
    pub struct ConvertParams {
        pub out: u64,
        pub x: u64,
        pub n: u32,
    }
}

pub const F32_TO_BF16: Kernel<ConvertParams> = kernel!(MODULE, f32_to_bf16);
pub const BF16_TO_F32: Kernel<ConvertParams> = kernel!(MODULE, bf16_to_f32);
pub const ROUND_TO_TF32: Kernel<ConvertParams> = kernel!(MODULE, round_to_tf32);

/// Launches `kernel` over x's n values into `out` (n values of its own type).
fn convert<B: Backend, I: Elem, O: Elem>(
    dev: &B,
    op: &'static str,
    kernel: Kernel<ConvertParams>,
    out: &mut B::Buf<O>,
    x: &B::Buf<I>,
) -> Result<()> {
    let n = dev.len(x);
    if dev.len(out) != n {
        return Err(Error::Shape {
            op,
            msg: format!("out holds {} values, x {n}", dev.len(out)),
        });
    }
    let p = ConvertParams {
        out: dev.addr_mut(out),
        x: dev.addr(x),
        n: count(op, n)?,
    };
    // SAFETY: out and x hold n values of the kernel's output and input types; the kernel
    // touches indices < n.
    unsafe { dev.launch(kernel, LaunchConfig::elementwise(n), &p) }
}

/// out = x rounded to BF16 (nearest even), as [`Bf16::from_f32`]. x: (n) -> out: (n).
///
/// # Errors
/// [`Error::Shape`] if out does not hold n values.
pub fn f32_to_bf16<B: Backend>(dev: &B, out: &mut B::Buf<Bf16>, x: &B::Buf<f32>) -> Result<()> {
    convert(dev, "cuda f32_to_bf16", F32_TO_BF16, out, x)
}

/// out = x as FP32 (exact), as [`Bf16::to_f32`]. x: (n) -> out: (n).
///
/// # Errors
/// [`Error::Shape`] if out does not hold n values.
pub fn bf16_to_f32<B: Backend>(dev: &B, out: &mut B::Buf<f32>, x: &B::Buf<Bf16>) -> Result<()> {
    convert(dev, "cuda bf16_to_f32", BF16_TO_F32, out, x)
}

/// A fresh BF16 copy of x (each value rounded as [`f32_to_bf16`] rounds it): the operand copies of
/// the BF16 products. x: (n) -> (n).
///
/// # Errors
/// A failed allocation or launch.
pub fn bf16_copy<B: Backend>(dev: &B, x: &B::Buf<f32>) -> Result<B::Buf<Bf16>> {
    let mut out = dev.alloc::<Bf16>(dev.len(x))?;
    f32_to_bf16(dev, &mut out, x)?;
    Ok(out)
}

/// out = x rounded to TF32 (cvt.rna), as [`super::tf32_round`]. x: (n) -> out: (n).
///
/// # Errors
/// [`Error::Shape`] if out does not hold n values.
pub fn round_to_tf32<B: Backend>(dev: &B, out: &mut B::Buf<f32>, x: &B::Buf<f32>) -> Result<()> {
    convert(dev, "cuda round_to_tf32", ROUND_TO_TF32, out, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::parity::on_emu_and_gpu;
    use crate::precision::tf32_round;

    /// Every rounding case of the CPU's known-answer tests (ties both ways, subnormals, overflow,
    /// infinities, NaN), then a spread of bit patterns: the device gives the CPU's bits.
    fn inputs() -> Vec<f32> {
        let special = [
            0x3F80_1000u32,
            0xBF80_1000,
            0x3F80_5000,
            0x3F80_8000,
            0x3F81_8000,
            0x7F7F_FFFF,
            0xFF7F_FFFF,
            0x7F7F_8000,
            0x7F80_0000,
            0xFF80_0000,
            0x7FC0_0000,
            0x7F80_0001,
            0x0000_1000,
            0x0001_8000,
            0x8000_0FFF,
            0x007F_F000,
            0,
            0x8000_0000,
        ];
        let spread = (0..4096u32).map(|i| i.wrapping_mul(0x9E37_79B9));
        special
            .into_iter()
            .chain(spread)
            .map(f32::from_bits)
            .collect()
    }

    fn conversions_match_the_cpu<B: Backend>(dev: &B) {
        let x = inputs();
        let n = x.len();
        let xb = dev.upload(&x).unwrap();
        let mut h = dev.alloc::<Bf16>(n).unwrap();
        f32_to_bf16(dev, &mut h, &xb).unwrap();
        let got = dev.download(&h).unwrap();
        for (v, g) in x.iter().zip(&got) {
            let want = Bf16::from_f32(*v);
            assert_eq!(g, &want, "f32_to_bf16({:#010x})", v.to_bits());
        }
        let mut back = dev.alloc::<f32>(n).unwrap();
        bf16_to_f32(dev, &mut back, &h).unwrap();
        let back = dev.download(&back).unwrap();
        for (g, b) in got.iter().zip(&back) {
            assert_eq!(
                b.to_bits(),
                g.to_f32().to_bits(),
                "bf16_to_f32({:#06x})",
                g.0
            );
        }
        let mut t = dev.alloc::<f32>(n).unwrap();
        round_to_tf32(dev, &mut t, &xb).unwrap();
        for (v, g) in x.iter().zip(&dev.download(&t).unwrap()) {
            let want = tf32_round(*v);
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "round_to_tf32({:#010x})",
                v.to_bits()
            );
        }
        let mut short = dev.alloc::<f32>(n - 1).unwrap();
        let e = round_to_tf32(dev, &mut short, &xb).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cuda round_to_tf32: out holds {} values, x {n}", n - 1)
        );
    }

    on_emu_and_gpu!(
        emu_precision_conversions_match_the_cpu,
        gpu_precision_conversions_match_the_cpu,
        conversions_match_the_cpu
    );
}

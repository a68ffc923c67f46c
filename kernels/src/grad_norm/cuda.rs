//! The global-norm reduction and scaling on a CUDA device: the launch code of grad_norm.cu,
//! written once against [`Backend`] for the GPU and the emulated device.

use crate::cuda::launch::{
    count, params, Elementwise, ELEMENTWISE_THREADS, MAX_ELEMENTWISE_BLOCKS,
};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::{Error, Result};

/// grad_norm.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    grad_norm,
    headers: [],
    params: [SumSquaresParams, SumPartialsParams, ScaleParams],
);

params! {
    /// grad_norm.cu `SumSquaresParams`: x: (n) -> partial: (blocks), f64.
    pub struct SumSquaresParams {
        pub partial: u64,
        pub x: u64,
        pub n: u32,
    }

    /// grad_norm.cu `SumPartialsParams`: partial: (n) -> sums[slot], f64.
    pub struct SumPartialsParams {
        pub sums: u64,
        pub partial: u64,
        pub n: u32,
        pub slot: u32,
    }

    /// grad_norm.cu `ScaleParams`: x: (n) scaled in place.
    pub struct ScaleParams {
        pub x: u64,
        pub s: f32,
        pub n: u32,
    }
}

pub const SUM_OF_SQUARES_PARTIAL: Kernel<SumSquaresParams> =
    kernel!(MODULE, sum_of_squares_partial);
pub const SUM_PARTIALS: Kernel<SumPartialsParams> = kernel!(MODULE, sum_partials);
pub const SCALE_IN_PLACE: Kernel<ScaleParams> = kernel!(MODULE, scale_in_place);

/// sum(x^2), accumulated in f64 on the device (block partials, then one block adds them in
/// block order), read back to the host. x: (n).
pub fn sum_of_squares<B: Backend>(dev: &B, x: &B::Buf<f32>) -> Result<f64> {
    let mut partial = dev.alloc::<f64>(SUM_OF_SQUARES_BLOCKS as usize)?;
    let mut sums = dev.alloc::<f64>(1)?;
    sum_of_squares_into(dev, &mut sums, 0, &mut partial, x)?;
    Ok(dev.download(&sums)?[0])
}

/// Most blocks the first pass of [`sum_of_squares_into`] launches: the `partial` scratch buffer
/// needs this many values.
pub const SUM_OF_SQUARES_BLOCKS: u32 = MAX_ELEMENTWISE_BLOCKS;

/// sum(x^2) into `sums[slot]`, on the device, without a host read: the sums of many tensors
/// gather in one buffer, read once (see [`crate::grad_norm::SquareSums`]). The same two passes
/// as [`sum_of_squares`]; `partial` is scratch of at least [`SUM_OF_SQUARES_BLOCKS`] values,
/// overwritten. x: (n) -> sums: (slots), slot `slot` overwritten.
pub fn sum_of_squares_into<B: Backend>(
    dev: &B,
    sums: &mut B::Buf<f64>,
    slot: usize,
    partial: &mut B::Buf<f64>,
    x: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda sum_of_squares_into";
    let n = dev.len(x);
    let cfg = LaunchConfig::elementwise(n);
    let slots = dev.len(sums);
    if slot >= slots {
        return Err(Error::Shape {
            op: OP,
            msg: format!("slot {slot} of a buffer of {slots} sums"),
        });
    }
    let scratch = dev.len(partial);
    if scratch < cfg.grid.0 as usize {
        return Err(Error::Shape {
            op: OP,
            msg: format!(
                "partial holds {scratch} values, {} blocks need one each",
                cfg.grid.0
            ),
        });
    }
    let p = SumSquaresParams {
        partial: dev.addr_mut(partial),
        x: dev.addr(x),
        n: count(OP, n)?,
    };
    // SAFETY: x holds n values; partial holds at least one value per block of cfg.
    unsafe { dev.launch(SUM_OF_SQUARES_PARTIAL, cfg, &p) }?;
    let q = SumPartialsParams {
        sums: dev.addr_mut(sums),
        partial: dev.addr(partial),
        n: cfg.grid.0,
        slot: count(OP, slot)?,
    };
    // SAFETY: partial holds at least q.n values and sums more than q.slot (checked above); a
    // single block, whose thread 0 alone writes sums[slot].
    unsafe {
        dev.launch(
            SUM_PARTIALS,
            LaunchConfig::linear(1, ELEMENTWISE_THREADS, 0),
            &q,
        )
    }
}

/// x *= s, as [`crate::grad_norm::scale_in_place`]. x: (n).
pub fn scale_in_place<B: Backend>(dev: &B, x: &mut B::Buf<f32>, s: f32) -> Result<()> {
    const OP: &str = "cuda scale_in_place";
    let e = Elementwise::new(dev, OP, dev.len(x));
    let p = ScaleParams {
        x: e.output("x", x)?,
        s,
        n: e.count()?,
    };
    // SAFETY: x holds n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(SCALE_IN_PLACE, &p) }
}

//! Dropout on a CUDA device: the launch code of dropout.cu, written once against [`Backend`] for
//! the GPU and the emulated device.

use crate::cuda::launch::{params, Elementwise};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel};
use crate::philox::cuda::MaskKeyC;
use crate::philox::MaskKey;
use crate::Result;

/// dropout.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    dropout,
    headers: [crate::philox::cuda::HEADER],
    params: [MaskKeyC, DropoutParams],
);

params! {
    /// dropout.cu `DropoutParams`: inp: (n) -> out: (n).
    pub struct DropoutParams {
        pub out: u64,
        pub inp: u64,
        pub key: MaskKeyC,
        pub keep: f32,
        pub n: u32,
    }
}

pub const DROPOUT_APPLY: Kernel<DropoutParams> = kernel!(MODULE, dropout_apply);

/// out = inp * [uniform(i) < keep] / keep, the mask of `crate::dropout` (forward with inp = x,
/// backward with inp = dy and the forward's key). inp: (n) -> out: (n).
pub fn dropout_apply<B: Backend>(
    dev: &B,
    out: &mut B::Buf<f32>,
    inp: &B::Buf<f32>,
    keep: f32,
    key: MaskKey,
) -> Result<()> {
    const OP: &str = "cuda dropout_apply";
    crate::dropout::check_keep_prob(OP, keep)?;
    let e = Elementwise::new(dev, OP, dev.len(inp));
    let p = DropoutParams {
        out: e.output("out", out)?,
        inp: e.input("inp", inp)?,
        key: key.into(),
        keep,
        n: e.count()?,
    };
    // SAFETY: out and inp hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(DROPOUT_APPLY, &p) }
}

//! Adam on a CUDA device: the launch code of adam.cu, written once against [`Backend`] for the
//! GPU and the emulated device.

use crate::cuda::launch::{params, Elementwise};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel};
use crate::Result;

/// adam.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(adam, headers: [], params: [AdamParams]);

params! {
    /// adam.cu `AdamParams`: w, m, v, g: (n).
    pub struct AdamParams {
        pub w: u64,
        pub m: u64,
        pub v: u64,
        pub g: u64,
        pub beta1: f32,
        pub beta2: f32,
        pub epsilon: f32,
        pub lr_t: f32,
        pub n: u32,
    }
}

pub const ADAM_UPDATE: Kernel<AdamParams> = kernel!(MODULE, adam_update);

/// One Adam step `t` (from 1), as [`crate::adam::adam_update`]. w, m, v, g: (n); w, m, v updated.
#[allow(clippy::too_many_arguments)]
pub fn adam_update<B: Backend>(
    dev: &B,
    w: &mut B::Buf<f32>,
    m: &mut B::Buf<f32>,
    v: &mut B::Buf<f32>,
    g: &B::Buf<f32>,
    cfg: &crate::adam::Adam,
    t: u64,
) -> Result<()> {
    const OP: &str = "cuda adam_update";
    let lr_t = cfg.lr_t(t)?;
    let e = Elementwise::new(dev, OP, dev.len(w));
    let p = AdamParams {
        w: e.output("w", w)?,
        m: e.output("m", m)?,
        v: e.output("v", v)?,
        g: e.input("g", g)?,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        epsilon: cfg.epsilon,
        lr_t,
        n: e.count()?,
    };
    // SAFETY: w, m, v and g hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(ADAM_UPDATE, &p) }
}

//! SGD on a CUDA device: the launch code of sgd.cu, written once against [`Backend`] for the GPU
//! and the emulated device.

use crate::cuda::launch::{params, Elementwise};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel};
use crate::Result;

/// sgd.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(sgd, headers: [], params: [SgdParams]);

params! {
    /// sgd.cu `SgdParams`: w, buf, g: (n); nesterov is 0 or 1.
    pub struct SgdParams {
        pub w: u64,
        pub buf: u64,
        pub g: u64,
        pub lr: f32,
        pub momentum: f32,
        pub weight_decay: f32,
        pub nesterov: u32,
        pub n: u32,
    }
}

pub const SGD_UPDATE: Kernel<SgdParams> = kernel!(MODULE, sgd_update);

/// One SGD step, as [`crate::sgd::sgd_update`] (the caller checks `cfg`). w, buf, g: (n); w and
/// buf updated.
pub fn sgd_update<B: Backend>(
    dev: &B,
    w: &mut B::Buf<f32>,
    buf: &mut B::Buf<f32>,
    g: &B::Buf<f32>,
    cfg: &crate::sgd::Sgd,
) -> Result<()> {
    const OP: &str = "cuda sgd_update";
    let e = Elementwise::new(dev, OP, dev.len(w));
    let p = SgdParams {
        w: e.output("w", w)?,
        buf: e.output("buf", buf)?,
        g: e.input("g", g)?,
        lr: cfg.lr,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        nesterov: cfg.nesterov as u32,
        n: e.count()?,
    };
    // SAFETY: w, buf and g hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(SGD_UPDATE, &p) }
}

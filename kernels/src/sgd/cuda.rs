//! SGD on a CUDA device: the launch code of sgd.cu, written once against [`Backend`] for the GPU
//! and the emulated device.

use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::Module;
use crate::cuda::{kernel, Backend, Kernel, KernelParams, LaunchConfig};
use crate::Result;

/// sgd.cu.
pub const MODULE: Module = Module {
    name: "sgd",
    path: "sgd/sgd.cu",
    source: include_str!("sgd.cu"),
    headers: &[],
    params: &[SgdParams::LAYOUT],
};

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
    let n = dev.len(w);
    check_len(dev, OP, "buf", buf, n)?;
    check_len(dev, OP, "g", g, n)?;
    let p = SgdParams {
        w: dev.addr_mut(w),
        buf: dev.addr_mut(buf),
        g: dev.addr(g),
        lr: cfg.lr,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        nesterov: cfg.nesterov as u32,
        n: count(OP, n)?,
    };
    // SAFETY: w, buf and g are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(SGD_UPDATE, LaunchConfig::elementwise(n), &p) }
}

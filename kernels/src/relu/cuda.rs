//! ReLU on a CUDA device: the launch code of relu.cu, written once against [`Backend`] for the
//! GPU and the emulated device. Each function mirrors the CPU function of the same name on device
//! buffers.

use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::Module;
use crate::cuda::{kernel, Backend, Kernel, KernelParams, LaunchConfig};
use crate::Result;

/// relu.cu.
pub const MODULE: Module = Module {
    name: "relu",
    path: "relu/relu.cu",
    source: include_str!("relu.cu"),
    headers: &[],
    params: &[ReluForwardParams::LAYOUT, ReluBackwardParams::LAYOUT],
};

params! {
    /// relu.cu `ReluForwardParams`: x: (n) -> y: (n).
    pub struct ReluForwardParams {
        pub y: u64,
        pub x: u64,
        pub n: u32,
    }

    /// relu.cu `ReluBackwardParams`: dy, x: (n) -> dx: (n).
    pub struct ReluBackwardParams {
        pub dx: u64,
        pub dy: u64,
        pub x: u64,
        pub n: u32,
    }
}

pub const RELU_FORWARD: Kernel<ReluForwardParams> = kernel!(MODULE, relu_forward);
pub const RELU_BACKWARD: Kernel<ReluBackwardParams> = kernel!(MODULE, relu_backward);

/// y = max(x, 0). x: (n) -> y: (n).
pub fn relu_forward<B: Backend>(dev: &B, y: &mut B::Buf<f32>, x: &B::Buf<f32>) -> Result<()> {
    const OP: &str = "cuda relu_forward";
    let n = dev.len(x);
    check_len(dev, OP, "y", y, n)?;
    let p = ReluForwardParams {
        y: dev.addr_mut(y),
        x: dev.addr(x),
        n: count(OP, n)?,
    };
    // SAFETY: y and x are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(RELU_FORWARD, LaunchConfig::elementwise(n), &p) }
}

/// dx = dy * [x > 0]. dy, x: (n) -> dx: (n).
pub fn relu_backward<B: Backend>(
    dev: &B,
    dx: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    x: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda relu_backward";
    let n = dev.len(x);
    check_len(dev, OP, "dy", dy, n)?;
    check_len(dev, OP, "dx", dx, n)?;
    let p = ReluBackwardParams {
        dx: dev.addr_mut(dx),
        dy: dev.addr(dy),
        x: dev.addr(x),
        n: count(OP, n)?,
    };
    // SAFETY: dx, dy and x are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(RELU_BACKWARD, LaunchConfig::elementwise(n), &p) }
}

//! ReLU on a CUDA device: the launch code of relu.cu, written once against [`Backend`] for the
//! GPU and the emulated device. Each function mirrors the CPU function of the same name on device
//! buffers.

use crate::cuda::launch::{params, Elementwise};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel};
use crate::Result;

/// relu.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    relu,
    headers: [],
    params: [ReluForwardParams, ReluBackwardParams],
);

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
    let e = Elementwise::new(dev, OP, dev.len(x));
    let p = ReluForwardParams {
        y: e.output("y", y)?,
        x: e.input("x", x)?,
        n: e.count()?,
    };
    // SAFETY: y and x hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(RELU_FORWARD, &p) }
}

/// dx = dy * [x > 0]. dy, x: (n) -> dx: (n).
pub fn relu_backward<B: Backend>(
    dev: &B,
    dx: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    x: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda relu_backward";
    let e = Elementwise::new(dev, OP, dev.len(x));
    let p = ReluBackwardParams {
        dy: e.input("dy", dy)?,
        dx: e.output("dx", dx)?,
        x: e.input("x", x)?,
        n: e.count()?,
    };
    // SAFETY: dx, dy and x hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(RELU_BACKWARD, &p) }
}

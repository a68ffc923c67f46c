//! Elementwise sums on a CUDA device: the launch code of add.cu, written once against
//! [`Backend`] for the GPU and the emulated device.

use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::Module;
use crate::cuda::{kernel, Backend, Kernel, KernelParams, LaunchConfig};
use crate::Result;

/// add.cu.
pub const MODULE: Module = Module {
    name: "add",
    path: "add/add.cu",
    source: include_str!("add.cu"),
    headers: &[],
    params: &[AddParams::LAYOUT, AddAssignParams::LAYOUT],
};

params! {
    /// add.cu `AddParams`: a, b: (n) -> y: (n).
    pub struct AddParams {
        pub y: u64,
        pub a: u64,
        pub b: u64,
        pub n: u32,
    }

    /// add.cu `AddAssignParams`: acc += b, both (n).
    pub struct AddAssignParams {
        pub acc: u64,
        pub b: u64,
        pub n: u32,
    }
}

pub const ADD: Kernel<AddParams> = kernel!(MODULE, add);
pub const ADD_ASSIGN: Kernel<AddAssignParams> = kernel!(MODULE, add_assign);

/// y = a + b. a, b: (n) -> y: (n).
pub fn add<B: Backend>(
    dev: &B,
    y: &mut B::Buf<f32>,
    a: &B::Buf<f32>,
    b: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda add";
    let n = dev.len(a);
    check_len(dev, OP, "b", b, n)?;
    check_len(dev, OP, "y", y, n)?;
    let p = AddParams {
        y: dev.addr_mut(y),
        a: dev.addr(a),
        b: dev.addr(b),
        n: count(OP, n)?,
    };
    // SAFETY: y, a and b are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(ADD, LaunchConfig::elementwise(n), &p) }
}

/// acc += b. acc, b: (n); acc accumulated into.
pub fn add_assign<B: Backend>(dev: &B, acc: &mut B::Buf<f32>, b: &B::Buf<f32>) -> Result<()> {
    const OP: &str = "cuda add_assign";
    let n = dev.len(acc);
    check_len(dev, OP, "b", b, n)?;
    let p = AddAssignParams {
        acc: dev.addr_mut(acc),
        b: dev.addr(b),
        n: count(OP, n)?,
    };
    // SAFETY: acc and b are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(ADD_ASSIGN, LaunchConfig::elementwise(n), &p) }
}

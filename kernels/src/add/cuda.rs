//! Elementwise sums on a CUDA device: the launch code of add.cu, written once against
//! [`Backend`] for the GPU and the emulated device.

use crate::cuda::launch::{params, Elementwise};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel};
use crate::Result;

/// add.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(add, headers: [], params: [AddParams, AddAssignParams]);

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
    let e = Elementwise::new(dev, OP, dev.len(a));
    let p = AddParams {
        b: e.input("b", b)?,
        y: e.output("y", y)?,
        a: e.input("a", a)?,
        n: e.count()?,
    };
    // SAFETY: y, a and b hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(ADD, &p) }
}

/// acc += b. acc, b: (n); acc accumulated into.
pub fn add_assign<B: Backend>(dev: &B, acc: &mut B::Buf<f32>, b: &B::Buf<f32>) -> Result<()> {
    const OP: &str = "cuda add_assign";
    let e = Elementwise::new(dev, OP, dev.len(acc));
    let p = AddAssignParams {
        b: e.input("b", b)?,
        acc: e.output("acc", acc)?,
        n: e.count()?,
    };
    // SAFETY: acc and b hold n values (checked by `e`); the kernel touches indices < n.
    unsafe { e.launch(ADD_ASSIGN, &p) }
}

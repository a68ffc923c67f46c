//! The launch code of every op: argument checks, parameter structs and launch configurations,
//! written once against [`Backend`] and shared by the GPU and the emulated device.
//!
//! Each function mirrors the CPU function of the same name (same arithmetic, same masks) on
//! device buffers; outputs are overwritten unless the doc says accumulated.

use super::launch::{Backend, Elem, Kernel, LaunchConfig};
use super::params::*;
use crate::philox::MaskKey;
use crate::{Error, Result};

/// Checks that `buf` holds `want` values.
fn check_len<B: Backend, T: Elem>(
    dev: &B,
    op: &'static str,
    name: &str,
    buf: &B::Buf<T>,
    want: usize,
) -> Result<()> {
    let len = dev.len(buf);
    if len == want {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            msg: format!("{name} holds {len} values, expected {want}"),
        })
    }
}

/// `n` as the kernels' `uint32_t` count.
fn count(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Invalid {
        op,
        msg: format!("{n} values exceed the kernels' 32-bit counts"),
    })
}

pub const RELU_FORWARD: Kernel<ReluForwardParams> = Kernel::new("relu", "relu_forward");
pub const RELU_BACKWARD: Kernel<ReluBackwardParams> = Kernel::new("relu", "relu_backward");
pub const ADD: Kernel<AddParams> = Kernel::new("add", "add");
pub const ADD_ASSIGN: Kernel<AddAssignParams> = Kernel::new("add", "add_assign");
pub const DROPOUT_APPLY: Kernel<DropoutParams> = Kernel::new("dropout", "dropout_apply");

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
    let n = dev.len(inp);
    check_len(dev, OP, "out", out, n)?;
    let p = DropoutParams {
        out: dev.addr_mut(out),
        inp: dev.addr(inp),
        key: key.into(),
        keep,
        n: count(OP, n)?,
    };
    // SAFETY: out and inp are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(DROPOUT_APPLY, LaunchConfig::elementwise(n), &p) }
}

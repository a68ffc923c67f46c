//! Max-pooling on a CUDA device: the launch code of maxpool.cu, written once against
//! [`Backend`] for the GPU and the emulated device.

use super::Pool2d;
use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::{Error, Result};

/// maxpool.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(maxpool, headers: [], params: [MaxPoolParams]);

params! {
    /// maxpool.cu `MaxPoolParams`: forward x -> y, argmax; backward dy (in `x`) -> dx (in `y`).
    pub struct MaxPoolParams {
        pub y: u64,
        pub argmax: u64,
        pub x: u64,
        pub planes: u32,
        pub h: u32,
        pub w: u32,
        pub oh: u32,
        pub ow: u32,
        pub kh: u32,
        pub kw: u32,
        pub sh: u32,
        pub sw: u32,
        pub pad_top: u32,
        pub pad_left: u32,
    }
}

pub const MAXPOOL_FORWARD: Kernel<MaxPoolParams> = kernel!(MODULE, maxpool_forward);
pub const MAXPOOL_BACKWARD: Kernel<MaxPoolParams> = kernel!(MODULE, maxpool_backward);

/// The parameter struct of a pool over `dims` (N, C, H, W), checked.
fn pool_params(op: &'static str, dims: [usize; 4], pool: &Pool2d) -> Result<MaxPoolParams> {
    let [n, c, h, w] = dims;
    if h == 0 || w == 0 {
        return Err(Error::Shape {
            op,
            msg: format!("input ({n}, {c}, {h}, {w}) has an empty plane"),
        });
    }
    let g = pool.geometry(h, w);
    count(op, n * c * h * w)?;
    count(op, n * c * g.rows.out * g.cols.out)?;
    let (kh, kw) = pool.kernel();
    let (sh, sw) = pool.stride();
    Ok(MaxPoolParams {
        y: 0,
        argmax: 0,
        x: 0,
        planes: (n * c) as u32,
        h: h as u32,
        w: w as u32,
        oh: g.rows.out as u32,
        ow: g.cols.out as u32,
        kh: kh as u32,
        kw: kw as u32,
        sh: sh as u32,
        sw: sw as u32,
        pad_top: g.rows.before as u32,
        pad_left: g.cols.before as u32,
    })
}

/// Max-pool forward, SAME padding, as [`crate::maxpool::maxpool2d_forward`].
/// x: (N, C, H, W) given by `dims` -> y, argmax: (N, C, OH, OW), overwritten.
pub fn maxpool_forward<B: Backend>(
    dev: &B,
    y: &mut B::Buf<f32>,
    argmax: &mut B::Buf<u32>,
    x: &B::Buf<f32>,
    dims: [usize; 4],
    pool: &Pool2d,
) -> Result<()> {
    const OP: &str = "cuda maxpool_forward";
    let mut p = pool_params(OP, dims, pool)?;
    let out = (p.planes * p.oh * p.ow) as usize;
    check_len(dev, OP, "x", x, dims.iter().product())?;
    check_len(dev, OP, "y", y, out)?;
    check_len(dev, OP, "argmax", argmax, out)?;
    (p.y, p.argmax, p.x) = (dev.addr_mut(y), dev.addr_mut(argmax), dev.addr(x));
    // SAFETY: x holds planes*h*w values, y and argmax planes*oh*ow; windows are clamped to the plane.
    unsafe { dev.launch(MAXPOOL_FORWARD, LaunchConfig::elementwise(out), &p) }
}

/// Max-pool backward, as [`crate::maxpool::maxpool2d_backward`], as a gather: each dx cell sums,
/// in output order, the dy of the windows containing it whose argmax names it (the CPU's bits).
/// An argmax that names no cell of its window adds nowhere.
/// dy, argmax: (N, C, OH, OW) -> dx: (N, C, H, W) given by `dims`, overwritten.
pub fn maxpool_backward<B: Backend>(
    dev: &B,
    dx: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    argmax: &B::Buf<u32>,
    dims: [usize; 4],
    pool: &Pool2d,
) -> Result<()> {
    const OP: &str = "cuda maxpool_backward";
    let mut p = pool_params(OP, dims, pool)?;
    let out = (p.planes * p.oh * p.ow) as usize;
    check_len(dev, OP, "dx", dx, dims.iter().product())?;
    check_len(dev, OP, "dy", dy, out)?;
    check_len(dev, OP, "argmax", argmax, out)?;
    (p.y, p.argmax, p.x) = (dev.addr_mut(dx), dev.addr(argmax), dev.addr(dy));
    let cells = dims.iter().product();
    // SAFETY: dx holds planes*h*w values, dy and argmax planes*oh*ow; each thread writes its own
    // dx cell and reads only the outputs of the windows containing it, whatever argmax holds.
    unsafe { dev.launch(MAXPOOL_BACKWARD, LaunchConfig::elementwise(cells), &p) }
}

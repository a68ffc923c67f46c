//! The launch code of every op: argument checks, parameter structs and launch configurations,
//! written once against [`Backend`] and shared by the GPU and the emulated device.
//!
//! Each function mirrors the CPU function of the same name (same arithmetic, same masks) on
//! device buffers; outputs are overwritten unless the doc says accumulated.
//!
//! The elementwise, loss, pooling and optimiser ops are here; batch norm, GEMM and convolution
//! have a file each.

mod batchnorm;
mod conv2d;
mod gemm;

pub use batchnorm::*;
pub use conv2d::*;
pub use gemm::*;

// Until every op's launch code has moved into its folder (each exports a MODULE).
#[allow(ambiguous_glob_reexports)]
pub use crate::{adam::cuda::*, add::cuda::*, dropout::cuda::*, relu::cuda::*};

use super::kernel;
use super::launch::{check_len, count, Backend, Kernel, LaunchConfig};
use super::params::*;
use crate::philox::MaskKey;
use crate::{Error, Result};

pub const MAXPOOL_FORWARD: Kernel<MaxPoolParams> =
    kernel!(crate::maxpool::cuda::MODULE, maxpool_forward);
pub const MAXPOOL_BACKWARD: Kernel<MaxPoolParams> =
    kernel!(crate::maxpool::cuda::MODULE, maxpool_backward);
pub const DROPBLOCK_MASK: Kernel<DropBlockMaskParams> =
    kernel!(crate::dropblock::cuda::MODULE, dropblock_mask);
pub const DROPBLOCK_SCALE: Kernel<DropBlockScaleParams> =
    kernel!(crate::dropblock::cuda::MODULE, dropblock_scale);
pub const DROPBLOCK_APPLY: Kernel<DropBlockApplyParams> =
    kernel!(crate::dropblock::cuda::MODULE, dropblock_apply);

/// The parameter struct of a pool over `dims` (N, C, H, W), checked.
fn pool_params(
    op: &'static str,
    dims: [usize; 4],
    pool: &crate::maxpool::Pool2d,
) -> Result<MaxPoolParams> {
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
    pool: &crate::maxpool::Pool2d,
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
    pool: &crate::maxpool::Pool2d,
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

/// Threads per block of the DropBlock scale kernel, and the most of the mask kernel (which uses
/// one warp per 32 cells of a plane up to that).
const DROPBLOCK_THREADS: u32 = 256;

/// Most blocks of a `dropblock_mask` launch (one plane each; more planes loop).
const DROPBLOCK_MAX_BLOCKS: usize = 65_535;

/// Most cells of a DropBlock sampling grid, (H - b + 1) x (W - b + 1): the mask kernel holds the
/// grid's drawn centres in shared memory, one byte each, within the 48 KiB any launch may use
/// (less 1 KiB for the kernel's static shared memory).
pub const DROPBLOCK_MAX_GRID: usize = 47 * 1024;

/// Draws a DropBlock mask for a map of `dims` (N, C, H, W), as [`crate::dropblock::dropblock_mask`]:
/// the same Philox draws, so the same mask, and its rescale factor, computed on the device.
/// mask: (N, C, H, W), 1 kept, 0 dropped; scale: (1), mask.len() / mask.sum() or 0; both
/// overwritten. Returns false (both untouched) when DropBlock is the identity.
///
/// # Errors
/// A bad keep probability or block size, buffers of the wrong size, or a sampling grid of more
/// than [`DROPBLOCK_MAX_GRID`] cells.
pub fn dropblock_mask<B: Backend>(
    dev: &B,
    mask: &mut B::Buf<u8>,
    scale: &mut B::Buf<f32>,
    dims: [usize; 4],
    block: usize,
    keep: f32,
    key: MaskKey,
) -> Result<bool> {
    const OP: &str = "cuda dropblock_mask";
    crate::dropout::check_keep_prob(OP, keep)?;
    if block == 0 {
        return Err(Error::Invalid {
            op: OP,
            msg: "block size is 0".into(),
        });
    }
    let [n, c, h, w] = dims;
    check_len(dev, OP, "mask", mask, n * c * h * w)?;
    check_len(dev, OP, "scale", scale, 1)?;
    if keep == 1.0 || h < block || w < block {
        return Ok(false);
    }
    let grid = (h - block + 1) * (w - block + 1);
    if grid > DROPBLOCK_MAX_GRID {
        return Err(Error::Invalid {
            op: OP,
            msg: format!(
                "a {h} x {w} map with block {block} has a sampling grid of {grid} cells, \
                 more than the kernel's {DROPBLOCK_MAX_GRID}"
            ),
        });
    }
    let planes = n * c;
    let mut kept = dev.alloc::<u32>(planes)?;
    let p = DropBlockMaskParams {
        mask: dev.addr_mut(mask),
        kept: dev.addr_mut(&mut kept),
        key: key.into(),
        gamma: crate::dropblock::dropblock_gamma(h, w, block, keep),
        planes: count(OP, planes)?,
        h: count(OP, n * c * h * w).map(|_| h as u32)?,
        w: w as u32,
        block: block as u32,
    };
    let blocks = planes.clamp(1, DROPBLOCK_MAX_BLOCKS) as u32;
    let threads = (h * w).next_multiple_of(32).min(DROPBLOCK_THREADS as usize) as u32;
    let cfg = LaunchConfig::linear(blocks, threads, grid as u32);
    // SAFETY: mask holds planes*h*w values and kept planes; the shared tile holds the grid's
    // cells; block <= h, w keeps every square inside its plane.
    unsafe { dev.launch(DROPBLOCK_MASK, cfg, &p) }?;
    let s = DropBlockScaleParams {
        scale: dev.addr_mut(scale),
        kept: dev.addr(&kept),
        planes: p.planes,
        n: count(OP, n * c * h * w)?,
    };
    // SAFETY: kept holds `planes` values and scale one; one block reads and writes nothing else.
    unsafe {
        dev.launch(
            DROPBLOCK_SCALE,
            LaunchConfig::linear(1, DROPBLOCK_THREADS, 0),
            &s,
        )
    }?;
    Ok(true)
}

/// out = inp * scale where mask is 1, else 0, with `scale` the one value [`dropblock_mask`]
/// wrote. inp, mask: (n), scale: (1) -> out: (n), overwritten.
pub fn dropblock_apply<B: Backend>(
    dev: &B,
    out: &mut B::Buf<f32>,
    inp: &B::Buf<f32>,
    mask: &B::Buf<u8>,
    scale: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda dropblock_apply";
    let n = dev.len(inp);
    check_len(dev, OP, "out", out, n)?;
    check_len(dev, OP, "mask", mask, n)?;
    check_len(dev, OP, "scale", scale, 1)?;
    let p = DropBlockApplyParams {
        out: dev.addr_mut(out),
        inp: dev.addr(inp),
        mask: dev.addr(mask),
        scale: dev.addr(scale),
        n: count(OP, n)?,
    };
    // SAFETY: out, inp and mask are live buffers of n values and scale of one; the kernel
    // touches indices < n.
    unsafe { dev.launch(DROPBLOCK_APPLY, LaunchConfig::elementwise(n), &p) }
}

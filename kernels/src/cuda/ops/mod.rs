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
pub use crate::{add::cuda::*, dropout::cuda::*, relu::cuda::*};

use super::kernel;
use super::launch::{check_len, count, Backend, Kernel, LaunchConfig, ELEMENTWISE_THREADS};
use super::params::*;
use crate::philox::MaskKey;
use crate::{Error, Result};

pub const ADAM_UPDATE: Kernel<AdamParams> = kernel!(crate::adam::cuda::MODULE, adam_update);
pub const SUM_OF_SQUARES_PARTIAL: Kernel<SumSquaresParams> =
    kernel!(crate::grad_norm::cuda::MODULE, sum_of_squares_partial);
pub const SUM_PARTIALS: Kernel<SumPartialsParams> =
    kernel!(crate::grad_norm::cuda::MODULE, sum_partials);
pub const SCALE_IN_PLACE: Kernel<ScaleParams> =
    kernel!(crate::grad_norm::cuda::MODULE, scale_in_place);
pub const SOFTMAX_CE_FORWARD: Kernel<SoftmaxCeForwardParams> =
    kernel!(crate::softmax_ce::cuda::MODULE, softmax_ce_forward);
pub const SOFTMAX_CE_BACKWARD: Kernel<SoftmaxCeBackwardParams> =
    kernel!(crate::softmax_ce::cuda::MODULE, softmax_ce_backward);
pub const SOFTMAX_CE_TALLY: Kernel<SoftmaxCeTallyParams> =
    kernel!(crate::softmax_ce::cuda::MODULE, softmax_ce_tally);
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
    let n = dev.len(w);
    check_len(dev, OP, "m", m, n)?;
    check_len(dev, OP, "v", v, n)?;
    check_len(dev, OP, "g", g, n)?;
    let p = AdamParams {
        w: dev.addr_mut(w),
        m: dev.addr_mut(m),
        v: dev.addr_mut(v),
        g: dev.addr(g),
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        epsilon: cfg.epsilon,
        lr_t,
        n: count(OP, n)?,
    };
    // SAFETY: w, m, v and g are live buffers of n values; the kernel touches indices < n.
    unsafe { dev.launch(ADAM_UPDATE, LaunchConfig::elementwise(n), &p) }
}

pub const SGD_UPDATE: Kernel<SgdParams> = kernel!(crate::sgd::cuda::MODULE, sgd_update);

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

/// sum(x^2), accumulated in f64 on the device (block partials, then one block adds them in
/// block order), read back to the host. x: (n).
pub fn sum_of_squares<B: Backend>(dev: &B, x: &B::Buf<f32>) -> Result<f64> {
    let mut partial = dev.alloc::<f64>(SUM_OF_SQUARES_BLOCKS as usize)?;
    let mut sums = dev.alloc::<f64>(1)?;
    sum_of_squares_into(dev, &mut sums, 0, &mut partial, x)?;
    Ok(dev.download(&sums)?[0])
}

/// Most blocks the first pass of [`sum_of_squares_into`] launches: the `partial` scratch buffer
/// needs this many values.
pub const SUM_OF_SQUARES_BLOCKS: u32 = super::launch::MAX_ELEMENTWISE_BLOCKS;

/// sum(x^2) into `sums[slot]`, on the device, without a host read: the sums of many tensors
/// gather in one buffer, read once (see [`crate::grad_norm::SquareSums`]). The same two passes
/// as [`sum_of_squares`]; `partial` is scratch of at least [`SUM_OF_SQUARES_BLOCKS`] values,
/// overwritten. x: (n) -> sums: (slots), slot `slot` overwritten.
pub fn sum_of_squares_into<B: Backend>(
    dev: &B,
    sums: &mut B::Buf<f64>,
    slot: usize,
    partial: &mut B::Buf<f64>,
    x: &B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda sum_of_squares_into";
    let n = dev.len(x);
    let cfg = LaunchConfig::elementwise(n);
    let slots = dev.len(sums);
    if slot >= slots {
        return Err(Error::Shape {
            op: OP,
            msg: format!("slot {slot} of a buffer of {slots} sums"),
        });
    }
    let scratch = dev.len(partial);
    if scratch < cfg.grid.0 as usize {
        return Err(Error::Shape {
            op: OP,
            msg: format!(
                "partial holds {scratch} values, {} blocks need one each",
                cfg.grid.0
            ),
        });
    }
    let p = SumSquaresParams {
        partial: dev.addr_mut(partial),
        x: dev.addr(x),
        n: count(OP, n)?,
    };
    // SAFETY: x holds n values; partial holds at least one value per block of cfg.
    unsafe { dev.launch(SUM_OF_SQUARES_PARTIAL, cfg, &p) }?;
    let q = SumPartialsParams {
        sums: dev.addr_mut(sums),
        partial: dev.addr(partial),
        n: cfg.grid.0,
        slot: count(OP, slot)?,
    };
    // SAFETY: partial holds at least q.n values and sums more than q.slot (checked above); a
    // single block, whose thread 0 alone writes sums[slot].
    unsafe {
        dev.launch(
            SUM_PARTIALS,
            LaunchConfig::linear(1, ELEMENTWISE_THREADS, 0),
            &q,
        )
    }
}

/// x *= s, as [`crate::grad_norm::scale_in_place`]. x: (n).
pub fn scale_in_place<B: Backend>(dev: &B, x: &mut B::Buf<f32>, s: f32) -> Result<()> {
    const OP: &str = "cuda scale_in_place";
    let n = dev.len(x);
    let p = ScaleParams {
        x: dev.addr_mut(x),
        s,
        n: count(OP, n)?,
    };
    // SAFETY: x is a live buffer of n values; the kernel touches indices < n.
    unsafe { dev.launch(SCALE_IN_PLACE, LaunchConfig::elementwise(n), &p) }
}

/// Softmax and per-row cross-entropy. logits: (rows, classes), labels: (rows) ->
/// probs: (rows, classes), row_loss: (rows) in f64, overwritten; [`mean_loss`] reads the loss.
pub fn softmax_ce_forward<B: Backend>(
    dev: &B,
    probs: &mut B::Buf<f32>,
    row_loss: &mut B::Buf<f64>,
    logits: &B::Buf<f32>,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<()> {
    const OP: &str = "cuda softmax_ce_forward";
    let rows = dev.len(labels);
    if rows == 0 || classes == 0 {
        return Err(Error::Shape {
            op: OP,
            msg: format!("{rows} rows of {classes} classes: both must be > 0"),
        });
    }
    check_len(dev, OP, "logits", logits, rows * classes)?;
    check_len(dev, OP, "probs", probs, rows * classes)?;
    check_len(dev, OP, "row_loss", row_loss, rows)?;
    let p = SoftmaxCeForwardParams {
        probs: dev.addr_mut(probs),
        row_loss: dev.addr_mut(row_loss),
        logits: dev.addr(logits),
        labels: dev.addr(labels),
        rows: count(OP, rows)?,
        classes: count(OP, rows * classes).map(|_| classes as u32)?,
    };
    // SAFETY: logits and probs hold rows * classes values, labels and row_loss rows; the
    // kernel reads logits only at labels below classes.
    unsafe { dev.launch(SOFTMAX_CE_FORWARD, LaunchConfig::elementwise(rows), &p) }
}

/// The mean of the per-row losses, summed in f64 in row order as the CPU does (a host read).
pub fn mean_loss<B: Backend>(dev: &B, row_loss: &B::Buf<f64>) -> Result<f32> {
    let losses = dev.download(row_loss)?;
    if let Some(r) = losses.iter().position(|&l| l < 0.0) {
        return Err(Error::Invalid {
            op: "cuda softmax_ce_forward",
            msg: format!("label of row {r} is not below the number of classes"),
        });
    }
    Ok((losses.iter().sum::<f64>() / losses.len() as f64) as f32)
}

/// dlogits = (probs - onehot(labels)) / rows. probs: (rows, classes), labels: (rows) ->
/// dlogits: (rows, classes), overwritten.
pub fn softmax_ce_backward<B: Backend>(
    dev: &B,
    dlogits: &mut B::Buf<f32>,
    probs: &B::Buf<f32>,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<()> {
    const OP: &str = "cuda softmax_ce_backward";
    let rows = dev.len(labels);
    check_len(dev, OP, "probs", probs, rows * classes)?;
    check_len(dev, OP, "dlogits", dlogits, rows * classes)?;
    let p = SoftmaxCeBackwardParams {
        dlogits: dev.addr_mut(dlogits),
        probs: dev.addr(probs),
        labels: dev.addr(labels),
        rows: count(OP, rows)?,
        classes: count(OP, rows * classes).map(|_| classes as u32)?,
    };
    // SAFETY: probs and dlogits hold rows * classes values, labels rows.
    unsafe {
        dev.launch(
            SOFTMAX_CE_BACKWARD,
            LaunchConfig::elementwise(rows * classes),
            &p,
        )
    }
}

/// Adds a minibatch to a loss tally ([`crate::softmax_ce::LossTally`]) without a host read:
/// its mean loss (the row losses of [`softmax_ce_forward`] summed in row order, rounded to f32)
/// and its rows whose largest probability is at the label. row_loss: (rows) f64,
/// probs: (rows, classes), labels: (rows) -> sums: (4) f64, accumulated.
pub fn softmax_ce_tally<B: Backend>(
    dev: &B,
    sums: &mut B::Buf<f64>,
    row_loss: &B::Buf<f64>,
    probs: &B::Buf<f32>,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<()> {
    const OP: &str = "cuda softmax_ce_tally";
    let rows = dev.len(labels);
    if rows == 0 || classes == 0 {
        return Err(Error::Shape {
            op: OP,
            msg: format!("{rows} rows of {classes} classes: both must be > 0"),
        });
    }
    check_len(dev, OP, "sums", sums, crate::softmax_ce::TALLY_LEN)?;
    check_len(dev, OP, "row_loss", row_loss, rows)?;
    check_len(dev, OP, "probs", probs, rows * classes)?;
    let p = SoftmaxCeTallyParams {
        sums: dev.addr_mut(sums),
        row_loss: dev.addr(row_loss),
        probs: dev.addr(probs),
        labels: dev.addr(labels),
        rows: count(OP, rows)?,
        classes: count(OP, rows * classes).map(|_| classes as u32)?,
    };
    // SAFETY: sums holds TALLY_LEN values, row_loss and labels rows, probs rows * classes; one
    // block, whose thread 0 alone writes sums.
    unsafe {
        dev.launch(
            SOFTMAX_CE_TALLY,
            LaunchConfig::linear(1, ELEMENTWISE_THREADS, 0),
            &p,
        )
    }
}

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

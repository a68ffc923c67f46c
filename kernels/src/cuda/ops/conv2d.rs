//! Conv2d on the device, as [`crate::conv2d`]: implicit GEMMs on the tiled product (conv2d.cu),
//! no im2col buffer. Any kernel size, stride and padding. Each pass runs in the block tile
//! [`GemmTile::for_output`] picks for its output (the `_with` variants take one, for tests).

use super::gemm::{tile_grid, GemmTile, GEMM_THREADS, GEMM_TILE_K};
use super::{check_len, count};
use crate::conv2d::{Conv2dDims, Conv2dGeom};
use crate::cuda::launch::{Backend, Kernel, LaunchConfig};
use crate::cuda::params::{Conv2dParams, ConvGeomC, SumSplitsParams};
use crate::Result;

/// Each pass's kernels, by tile: `[large, small]`.
pub const CONV2D_FORWARD: [Kernel<Conv2dParams>; 2] = [
    Kernel::new("conv2d", "conv2d_forward_128"),
    Kernel::new("conv2d", "conv2d_forward_64"),
];
pub const CONV2D_BACKWARD_DATA: [Kernel<Conv2dParams>; 2] = [
    Kernel::new("conv2d", "conv2d_backward_data_128"),
    Kernel::new("conv2d", "conv2d_backward_data_64"),
];
pub const CONV2D_BACKWARD_WEIGHT: [Kernel<Conv2dParams>; 2] = [
    Kernel::new("conv2d", "conv2d_backward_weight_128"),
    Kernel::new("conv2d", "conv2d_backward_weight_64"),
];
pub const CONV2D_SUM_SPLITS: Kernel<SumSplitsParams> = Kernel::new("conv2d", "conv2d_sum_splits");

/// Blocks of the large tile that an H100's 132 multiprocessors run at once (two each): one
/// wave. Backward-weight splits its long sum over the batch's pixels until its few output tiles
/// make up to that many blocks.
const TARGET_BLOCKS: usize = 264;
/// Fewest output pixels one split of backward-weight sums (below that, the partials cost more
/// than they save).
const MIN_PIXELS_PER_SPLIT: usize = 1024;
/// Most slices of backward-weight's pixel sum (each holds a partial dweight in memory).
const MAX_SPLITS: usize = 64;

/// The sizes of `d` as the kernels' 32-bit geometry, every tensor checked to fit.
fn geom(op: &'static str, d: &Conv2dDims) -> Result<ConvGeomC> {
    for dims in [d.x_dims(), d.weight_dims(), d.y_dims()] {
        count(op, dims.iter().product())?;
    }
    let c = |v: usize| v as u32;
    Ok(ConvGeomC {
        n: c(d.n),
        c: c(d.c),
        h: c(d.h),
        w: c(d.w),
        k: c(d.k),
        kh: c(d.kh),
        kw: c(d.kw),
        oh: c(d.oh),
        ow: c(d.ow),
        stride: c(d.stride),
        pad: c(d.pad),
    })
}

/// The sizes of a convolution of x `x_dims` by weight `weight_dims`, its three buffers checked.
fn dims<B: Backend>(
    op: &'static str,
    dev: &B,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
    [x, weight, y]: [(&'static str, &B::Buf<f32>); 3],
) -> Result<(Conv2dDims, ConvGeomC)> {
    let d = Conv2dDims::new(op, x_dims, weight_dims, geometry)?;
    check_len(dev, op, x.0, x.1, d.x_dims().iter().product())?;
    check_len(
        dev,
        op,
        weight.0,
        weight.1,
        d.weight_dims().iter().product(),
    )?;
    check_len(dev, op, y.0, y.1, d.y_dims().iter().product())?;
    let g = geom(op, &d)?;
    Ok((d, g))
}

/// The kernel of `pass` (`[large, small]`) for `tile`.
fn kernel(pass: [Kernel<Conv2dParams>; 2], tile: GemmTile) -> Kernel<Conv2dParams> {
    match tile {
        GemmTile::Large => pass[0],
        GemmTile::Small => pass[1],
    }
}

/// A launch of tiled-product blocks over an (m, n) output, `splits` deep.
fn tiled(
    op: &'static str,
    tile: GemmTile,
    m: usize,
    n: usize,
    splits: u32,
) -> Result<LaunchConfig> {
    let (gx, gy) = tile_grid(op, tile, m, n)?;
    Ok(LaunchConfig {
        grid: (gx, gy, splits),
        block: (GEMM_THREADS, 1, 1),
        shared_bytes: 0,
    })
}

/// Convolution forward, as [`crate::conv2d::conv2d_forward`].
/// x: (N, C, H, W) given by `x_dims`, weight: (K, C, KH, KW) given by `weight_dims` ->
/// y: (N, K, OH, OW), overwritten.
///
/// # Errors
/// As the CPU's (see [`Conv2dDims::new`]), and buffers that do not hold their shapes.
pub fn conv2d_forward<B: Backend>(
    dev: &B,
    y: &mut B::Buf<f32>,
    x: &B::Buf<f32>,
    weight: &B::Buf<f32>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    conv2d_forward_with(dev, None, y, x, weight, x_dims, weight_dims, geometry)
}

/// [`conv2d_forward`] in block tile `tile` (`None`: as [`GemmTile::for_output`] picks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_forward_with<B: Backend>(
    dev: &B,
    tile: Option<GemmTile>,
    y: &mut B::Buf<f32>,
    x: &B::Buf<f32>,
    weight: &B::Buf<f32>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "cuda conv2d_forward";
    let bufs = [("x", x), ("weight", weight), ("y", &*y)];
    let (d, g) = dims(OP, dev, x_dims, weight_dims, geometry, bufs)?;
    let (m, n) = (d.k, d.n * d.oh * d.ow);
    let tile = tile.unwrap_or(GemmTile::for_output(m, n, 1));
    let cfg = tiled(OP, tile, m, n, 1)?;
    let p = Conv2dParams {
        out: dev.addr_mut(y),
        x: dev.addr(x),
        weight: dev.addr(weight),
        dy: 0,
        g,
        k_per_split: 0,
    };
    // SAFETY: x, weight and y hold their shapes' values (checked); the kernel reads x only at
    // in-range pixels and writes y at in-range (k, pixel) pairs.
    unsafe { dev.launch(kernel(CONV2D_FORWARD, tile), cfg, &p) }
}

/// Convolution backward with respect to the input, as [`crate::conv2d::conv2d_backward_data`].
/// dy: (N, K, OH, OW), weight: (K, C, KH, KW) given by `weight_dims` -> dx: (N, C, H, W) given
/// by `x_dims`, overwritten.
///
/// # Errors
/// As the CPU's, and buffers that do not hold their shapes.
pub fn conv2d_backward_data<B: Backend>(
    dev: &B,
    dx: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    weight: &B::Buf<f32>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    conv2d_backward_data_with(dev, None, dx, dy, weight, x_dims, weight_dims, geometry)
}

/// [`conv2d_backward_data`] in block tile `tile` (`None`: as [`GemmTile::for_output`] picks).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_backward_data_with<B: Backend>(
    dev: &B,
    tile: Option<GemmTile>,
    dx: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    weight: &B::Buf<f32>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "cuda conv2d_backward_data";
    let bufs = [("dx", &*dx), ("weight", weight), ("dy", dy)];
    let (d, g) = dims(OP, dev, x_dims, weight_dims, geometry, bufs)?;
    let (m, n) = (d.c, d.n * d.h * d.w);
    let tile = tile.unwrap_or(GemmTile::for_output(m, n, 1));
    let cfg = tiled(OP, tile, m, n, 1)?;
    let p = Conv2dParams {
        out: dev.addr_mut(dx),
        x: 0,
        weight: dev.addr(weight),
        dy: dev.addr(dy),
        g,
        k_per_split: 0,
    };
    // SAFETY: dx, weight and dy hold their shapes' values (checked); the kernel reads dy only at
    // in-range output pixels and writes dx at in-range (c, pixel) pairs.
    unsafe { dev.launch(kernel(CONV2D_BACKWARD_DATA, tile), cfg, &p) }
}

/// Convolution backward with respect to the weight, as
/// [`crate::conv2d::conv2d_backward_weight`]. dy: (N, K, OH, OW), x: (N, C, H, W) given by
/// `x_dims` -> dweight: (K, C, KH, KW) given by `weight_dims`, accumulated (`+=`).
///
/// The sum over the batch's pixels is split into slices when the output has few tiles (each
/// slice a block), and the slices' partial sums are added in slice order: the result depends on
/// the shape only, never on scheduling.
///
/// # Errors
/// As the CPU's, and buffers that do not hold their shapes.
pub fn conv2d_backward_weight<B: Backend>(
    dev: &B,
    dweight: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    x: &B::Buf<f32>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    let d = Conv2dDims::new("cuda conv2d_backward_weight", x_dims, weight_dims, geometry)?;
    let (m, n, pixels) = (d.k, d.c * d.kh * d.kw, d.n * d.oh * d.ow);
    let max_splits = (pixels / MIN_PIXELS_PER_SPLIT).clamp(1, MAX_SPLITS);
    let tile = GemmTile::for_output(m, n, max_splits);
    let (bm, bn) = tile.dims();
    let tiles = m.div_ceil(bm) * n.div_ceil(bn);
    // At most TARGET_BLOCKS blocks: a grid just past it runs a second wave for a few blocks
    // (block 1 at batch 250: 9 tiles x 29 slices = 261 blocks, where 30 would make 270).
    let splits = (TARGET_BLOCKS / tiles).clamp(1, max_splits);
    conv2d_backward_weight_with(
        dev,
        tile,
        splits,
        dweight,
        dy,
        x,
        x_dims,
        weight_dims,
        geometry,
    )
}

/// [`conv2d_backward_weight`] in block tile `tile`, with the sum over the pixels split into
/// about `splits` slices (clamped to 1..=64).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_backward_weight_with<B: Backend>(
    dev: &B,
    tile: GemmTile,
    splits: usize,
    dweight: &mut B::Buf<f32>,
    dy: &B::Buf<f32>,
    x: &B::Buf<f32>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "cuda conv2d_backward_weight";
    let bufs = [("x", x), ("dweight", &*dweight), ("dy", dy)];
    let (d, g) = dims(OP, dev, x_dims, weight_dims, geometry, bufs)?;
    let (taps, pixels) = (d.c * d.kh * d.kw, d.n * d.oh * d.ow);
    // At most MAX_SPLITS slices, each a whole number of k steps; the last may be shorter.
    let per_split = pixels
        .div_ceil(splits.clamp(1, MAX_SPLITS))
        .next_multiple_of(GEMM_TILE_K);
    let splits = pixels.div_ceil(per_split);
    let out_len = d.k * taps;
    let mut partial = if splits > 1 {
        count(OP, splits * out_len)?;
        Some(dev.alloc::<f32>(splits * out_len)?)
    } else {
        None
    };
    let out = match partial.as_mut() {
        Some(buf) => dev.addr_mut(buf),
        None => dev.addr_mut(dweight),
    };
    let p = Conv2dParams {
        out,
        x: dev.addr(x),
        weight: 0,
        dy: dev.addr(dy),
        g,
        k_per_split: per_split as u32,
    };
    let cfg = tiled(OP, tile, d.k, taps, splits as u32)?;
    // SAFETY: x and dy hold their shapes' values (checked); out is dweight (k*taps values) with
    // one split, else partial with splits*k*taps; slice z writes only its own k*taps values.
    unsafe { dev.launch(kernel(CONV2D_BACKWARD_WEIGHT, tile), cfg, &p) }?;
    if let Some(partial) = partial {
        let q = SumSplitsParams {
            out: dev.addr_mut(dweight),
            partial: dev.addr(&partial),
            n: out_len as u32,
            splits: splits as u32,
        };
        // SAFETY: dweight holds out_len values, partial splits * out_len.
        unsafe { dev.launch(CONV2D_SUM_SPLITS, LaunchConfig::elementwise(out_len), &q) }?;
    }
    Ok(())
}

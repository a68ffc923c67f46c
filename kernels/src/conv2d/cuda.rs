//! Conv2d on the device, as [`crate::conv2d`]: implicit GEMMs on the tiled product (conv2d.cu),
//! no im2col buffer. Any kernel size, stride and padding. Each pass runs in the block tile
//! [`GemmTile::for_output`] picks for its output (the `_with` variants take one, for tests).

use super::{Conv2dDims, Conv2dGeom};
use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::gemm::cuda::{tile_grid, GemmTile, GEMM_THREADS, GEMM_TILE_K};
use crate::Result;

/// conv2d.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    conv2d,
    headers: [],
    params: [ConvGeomC, Conv2dParams, SumSplitsParams],
);

params! {
    /// conv2d.cu `ConvGeom`: every size of one convolution ([`crate::conv2d::Conv2dDims`]).
    pub struct ConvGeomC as ConvGeom {
        pub n: u32,
        pub c: u32,
        pub h: u32,
        pub w: u32,
        pub k: u32,
        pub kh: u32,
        pub kw: u32,
        pub oh: u32,
        pub ow: u32,
        pub stride: u32,
        pub pad: u32,
    }

    /// conv2d.cu `Conv2dParams`: x: (n, c, h, w), weight: (k, c, kh, kw), dy: (n, k, oh, ow);
    /// out is y, dx or dweight (or the split partials) by kernel.
    pub struct Conv2dParams {
        pub out: u64,
        pub x: u64,
        pub weight: u64,
        pub dy: u64,
        pub g: ConvGeomC,
        pub k_per_split: u32,
    }

    /// conv2d.cu `SumSplitsParams`: partial: (splits, n) -> out: (n), accumulated.
    pub struct SumSplitsParams {
        pub out: u64,
        pub partial: u64,
        pub n: u32,
        pub splits: u32,
    }
}

/// Each pass's kernels, by tile: `[large, small]`.
pub const CONV2D_FORWARD: [Kernel<Conv2dParams>; 2] = [
    kernel!(MODULE, conv2d_forward_128),
    kernel!(MODULE, conv2d_forward_64),
];
pub const CONV2D_BACKWARD_DATA: [Kernel<Conv2dParams>; 2] = [
    kernel!(MODULE, conv2d_backward_data_128),
    kernel!(MODULE, conv2d_backward_data_64),
];
pub const CONV2D_BACKWARD_WEIGHT: [Kernel<Conv2dParams>; 2] = [
    kernel!(MODULE, conv2d_backward_weight_128),
    kernel!(MODULE, conv2d_backward_weight_64),
];
pub const CONV2D_SUM_SPLITS: Kernel<SumSplitsParams> = kernel!(MODULE, conv2d_sum_splits);

/// Blocks of the large tile that an H100's 132 multiprocessors run at once (two each): one
/// wave. Backward-weight splits its long sum over the batch's pixels so that its output tiles
/// fill whole waves (see [`split_count`]).
const TARGET_BLOCKS: usize = 264;
/// Fewest output pixels one split of backward-weight sums (below that, the partials cost more
/// than they save).
const MIN_PIXELS_PER_SPLIT: usize = 1024;
/// Most slices of backward-weight's pixel sum (each holds a partial dweight in memory).
const MAX_SPLITS: usize = 64;

/// How many slices backward-weight cuts its pixel sum into, for `tiles` output tiles and at most
/// `max_splits` slices: the count whose blocks waste the least of the waves they occupy, that is
/// the smallest `s` minimising `ceil(tiles * s / TARGET_BLOCKS) / s` (waves, each 1/s of the work
/// long). At batch 250: block 1's 9 tiles take 29 slices (261 blocks, one wave; 30 would start a
/// second wave for 6 blocks); block 3's 144 tiles take 11 (1,584 blocks, six full waves, where
/// one slice left 120 of 264 slots idle: measured 3.67 ms against 2.0 to 2.5 for the other
/// passes); block 4's 576 tiles take 3 (7 waves of 1/3 instead of 3 whole ones).
fn split_count(tiles: usize, max_splits: usize) -> usize {
    let waves = |s: usize| (tiles * s).div_ceil(TARGET_BLOCKS);
    // waves(s) / s < waves(best) / best, in integers.
    (1..=max_splits.max(1)).fold(1, |best, s| {
        if waves(s) * best < waves(best) * s {
            s
        } else {
            best
        }
    })
}

/// The block tile of backward-weight for `d`, and how many slices its pixel sum is cut into
/// ([`split_count`]).
pub(super) fn backward_weight_plan(d: &Conv2dDims) -> (GemmTile, usize) {
    let (m, n, pixels) = (d.k, d.c * d.kh * d.kw, d.n * d.oh * d.ow);
    let max_splits = (pixels / MIN_PIXELS_PER_SPLIT).clamp(1, MAX_SPLITS);
    let tile = GemmTile::for_output(m, n, max_splits);
    let (bm, bn) = tile.dims();
    let tiles = m.div_ceil(bm) * n.div_ceil(bn);
    (tile, split_count(tiles, max_splits))
}

/// Pixels per slice and the slice count of a sum over `pixels` cut into about `splits` slices
/// (clamped to 1..=64), each a whole number of `step`s (the kernel's k step); the last may be
/// shorter.
pub(super) fn split_pixels(pixels: usize, splits: usize, step: usize) -> (usize, usize) {
    let per_split = pixels
        .div_ceil(splits.clamp(1, MAX_SPLITS))
        .next_multiple_of(step);
    (per_split, pixels.div_ceil(per_split))
}

/// dweight (out_len values) += the sum of `partial`'s `splits` slices of out_len values, in slice
/// order.
pub(super) fn sum_splits<B: Backend>(
    dev: &B,
    dweight: &mut B::Buf<f32>,
    partial: &B::Buf<f32>,
    out_len: usize,
    splits: usize,
) -> Result<()> {
    let q = SumSplitsParams {
        out: dev.addr_mut(dweight),
        partial: dev.addr(partial),
        n: out_len as u32,
        splits: splits as u32,
    };
    // SAFETY: the callers pass dweight of out_len values and partial of splits * out_len.
    unsafe { dev.launch(CONV2D_SUM_SPLITS, LaunchConfig::elementwise(out_len), &q) }
}

/// The sizes of `d` as the kernels' 32-bit geometry, every tensor checked to fit.
pub(super) fn geom(op: &'static str, d: &Conv2dDims) -> Result<ConvGeomC> {
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
    let (tile, splits) = backward_weight_plan(&d);
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
    let (per_split, splits) = split_pixels(pixels, splits, GEMM_TILE_K);
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
        sum_splits(dev, dweight, &partial, out_len, splits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_count;

    #[test]
    fn backward_weight_splits_fill_whole_waves() {
        // The seed network at batch 250: (output tiles, most slices) -> slices.
        assert_eq!(split_count(9, 64), 29, "block 1: one wave of 261 blocks");
        assert_eq!(split_count(36, 62), 22, "block 2: 792 blocks, three waves");
        assert_eq!(split_count(144, 15), 11, "block 3: 1,584 blocks, six waves");
        assert_eq!(split_count(576, 3), 3, "block 4: 1,728 blocks in 7 waves");
        // A sum too short to split, and a grid already filling whole waves.
        assert_eq!(split_count(144, 1), 1);
        assert_eq!(split_count(264, 64), 1);
        assert_eq!(split_count(1, 0), 1);
    }
}

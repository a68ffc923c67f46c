//! Conv2d on tensor cores (`conv2d_tc.cu`): the implicit GEMMs of [`crate::conv2d`]'s forward,
//! backward-data and backward-weight passes on the tile core of `cuda/tc_gemm.cuh`, with the
//! operands in FP32 rounded to TF32 by the kernel, or in BF16; FP32 accumulation and FP32
//! outputs (y, dx, dweight).
//!
//! The results differ from the FP32 kernels' by the operands' rounding and the order of the FP32
//! additions. These kernels need sm_80 or newer: the caller (a precision mode) checks the device
//! before choosing them.

use super::cuda::{backward_weight_plan, geom, split_pixels, sum_splits, ConvGeomC};
use super::{Conv2dDims, Conv2dGeom};
use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::Module;
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::gemm::cuda::{tile_grid, GemmTile};
use crate::gemm::tc::{tc_shared_bytes, TcElem, TcPrecision, TC_THREADS};
use crate::Result;

/// conv2d_tc.cu, embedded (a module of its own beside conv2d.cu), and the Rust twins of its
/// parameter structs.
pub const MODULE: Module = Module {
    name: "conv2d_tc",
    path: "conv2d/conv2d_tc.cu",
    source: include_str!("conv2d_tc.cu"),
    headers: &[],
    params: &[
        <ConvGeomC as crate::cuda::KernelParams>::LAYOUT,
        <TcConvParams as crate::cuda::KernelParams>::LAYOUT,
    ],
};

params! {
    /// conv2d_tc.cu `TcConvParams`: x: (n, c, h, w), weight: (k, c, kh, kw), dy: (n, k, oh, ow)
    /// (FP32 or BF16, by kernel); out is y, dx or dweight (or the split partials) in FP32, by
    /// kernel.
    pub struct TcConvParams {
        pub out: u64,
        pub x: u64,
        pub weight: u64,
        pub dy: u64,
        pub g: ConvGeomC,
        pub k_per_split: u32,
    }
}

/// Each pass's kernels: [TF32, BF16][128 x 128, 64 x 64].
type TcPass = [[Kernel<TcConvParams>; 2]; 2];

const CONV2D_FORWARD_TC: TcPass = [
    [
        kernel!(MODULE, conv2d_forward_tf32_128),
        kernel!(MODULE, conv2d_forward_tf32_64),
    ],
    [
        kernel!(MODULE, conv2d_forward_bf16_128),
        kernel!(MODULE, conv2d_forward_bf16_64),
    ],
];
const CONV2D_BACKWARD_DATA_TC: TcPass = [
    [
        kernel!(MODULE, conv2d_backward_data_tf32_128),
        kernel!(MODULE, conv2d_backward_data_tf32_64),
    ],
    [
        kernel!(MODULE, conv2d_backward_data_bf16_128),
        kernel!(MODULE, conv2d_backward_data_bf16_64),
    ],
];
const CONV2D_BACKWARD_WEIGHT_TC: TcPass = [
    [
        kernel!(MODULE, conv2d_backward_weight_tf32_128),
        kernel!(MODULE, conv2d_backward_weight_tf32_64),
    ],
    [
        kernel!(MODULE, conv2d_backward_weight_bf16_128),
        kernel!(MODULE, conv2d_backward_weight_bf16_64),
    ],
];

/// The kernel of `pass` for operands of `T` in `tile`.
fn pass_kernel<T: TcElem>(pass: TcPass, tile: GemmTile) -> Kernel<TcConvParams> {
    pass[match T::PRECISION {
        TcPrecision::Tf32 => 0,
        TcPrecision::Bf16 => 1,
    }][match tile {
        GemmTile::Large => 0,
        GemmTile::Small => 1,
    }]
}

/// A launch of tensor-core blocks of `tile` over an (m, n) output, `splits` deep.
fn tc_launch(
    op: &'static str,
    tile: GemmTile,
    m: usize,
    n: usize,
    splits: usize,
) -> Result<LaunchConfig> {
    let (gx, gy) = tile_grid(op, tile, m, n)?;
    Ok(LaunchConfig {
        grid: (gx, gy, splits as u32),
        block: (TC_THREADS, 1, 1),
        shared_bytes: tc_shared_bytes(tile),
    })
}

/// The k of one step of the tensor-core tiles for operands of `T`: 128 bytes (32 TF32, 64 BF16).
fn step_k<T: TcElem>() -> usize {
    128 / std::mem::size_of::<T>()
}

/// Convolution forward on tensor cores, operands of `T` (f32: TF32, [`crate::precision::Bf16`]).
/// x: (N, C, H, W) given by `x_dims`, weight: (K, C, KH, KW) given by `weight_dims` -> y: (N, K,
/// OH, OW), overwritten. The block tile is `tile`, or [`GemmTile::for_output`]'s for the (K,
/// N*OH*OW) output.
///
/// # Errors
/// As [`crate::conv2d::conv2d_forward`] for the shapes; [`crate::Error::Shape`] for buffers that
/// do not hold them; [`crate::Error::Invalid`] for sizes past the kernels' 32-bit indices or the
/// grid.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_tc<B: Backend, T: TcElem>(
    dev: &B,
    tile: Option<GemmTile>,
    y: &mut B::Buf<f32>,
    x: &B::Buf<T>,
    weight: &B::Buf<T>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "cuda conv2d_forward_tc";
    let d = Conv2dDims::new(OP, x_dims, weight_dims, geometry)?;
    check_len(dev, OP, "x", x, d.x_dims().iter().product())?;
    check_len(dev, OP, "weight", weight, d.weight_dims().iter().product())?;
    check_len(dev, OP, "y", y, d.y_dims().iter().product())?;
    let (m, n) = (d.k, d.n * d.oh * d.ow);
    let tile = tile.unwrap_or(GemmTile::for_output(m, n, 1));
    let cfg = tc_launch(OP, tile, m, n, 1)?;
    let p = TcConvParams {
        out: dev.addr_mut(y),
        x: dev.addr(x),
        weight: dev.addr(weight),
        dy: 0,
        g: geom(OP, &d)?,
        k_per_split: 0,
    };
    // SAFETY: x, weight and y hold their shapes' values of the kernel's types (checked; the
    // kernel is chosen by T); blocks read x only at in-range pixels and weight at in-range
    // (k, tap) pairs, and write y at in-range (k, pixel) pairs.
    unsafe { dev.launch(pass_kernel::<T>(CONV2D_FORWARD_TC, tile), cfg, &p) }
}

/// Convolution backward with respect to the input on tensor cores, operands of `T`, as
/// [`crate::conv2d::conv2d_backward_data`]. dy: (N, K, OH, OW), weight: (K, C, KH, KW) given by
/// `weight_dims` -> dx: (N, C, H, W) given by `x_dims`, overwritten. The block tile is `tile`, or
/// [`GemmTile::for_output`]'s for the (C, N*H*W) output.
///
/// # Errors
/// As [`conv2d_forward_tc`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_data_tc<B: Backend, T: TcElem>(
    dev: &B,
    tile: Option<GemmTile>,
    dx: &mut B::Buf<f32>,
    dy: &B::Buf<T>,
    weight: &B::Buf<T>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "cuda conv2d_backward_data_tc";
    let d = Conv2dDims::new(OP, x_dims, weight_dims, geometry)?;
    check_len(dev, OP, "dy", dy, d.y_dims().iter().product())?;
    check_len(dev, OP, "weight", weight, d.weight_dims().iter().product())?;
    check_len(dev, OP, "dx", dx, d.x_dims().iter().product())?;
    let (m, n) = (d.c, d.n * d.h * d.w);
    let tile = tile.unwrap_or(GemmTile::for_output(m, n, 1));
    let cfg = tc_launch(OP, tile, m, n, 1)?;
    let p = TcConvParams {
        out: dev.addr_mut(dx),
        x: 0,
        weight: dev.addr(weight),
        dy: dev.addr(dy),
        g: geom(OP, &d)?,
        k_per_split: 0,
    };
    // SAFETY: dy, weight and dx hold their shapes' values of the kernel's types (checked; the
    // kernel is chosen by T); blocks read dy only at in-range output pixels and weight at
    // in-range (c, (k, tap)) pairs, and write dx at in-range (c, pixel) pairs.
    unsafe { dev.launch(pass_kernel::<T>(CONV2D_BACKWARD_DATA_TC, tile), cfg, &p) }
}

/// Convolution backward with respect to the weight on tensor cores, operands of `T`, as
/// [`crate::conv2d::conv2d_backward_weight`]. dy: (N, K, OH, OW), x: (N, C, H, W) given by
/// `x_dims` -> dweight: (K, C, KH, KW) given by `weight_dims`, accumulated (`+=`).
///
/// `plan` is the block tile and about how many slices the pixel sum is cut into (`None`: as the
/// FP32 kernel plans them); the slices' partial sums are added in slice order, so the result
/// depends on the shape and the plan only, never on scheduling.
///
/// # Errors
/// As [`conv2d_forward_tc`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_tc<B: Backend, T: TcElem>(
    dev: &B,
    plan: Option<(GemmTile, usize)>,
    dweight: &mut B::Buf<f32>,
    dy: &B::Buf<T>,
    x: &B::Buf<T>,
    x_dims: &[usize],
    weight_dims: &[usize],
    geometry: Conv2dGeom,
) -> Result<()> {
    const OP: &str = "cuda conv2d_backward_weight_tc";
    let d = Conv2dDims::new(OP, x_dims, weight_dims, geometry)?;
    check_len(dev, OP, "dy", dy, d.y_dims().iter().product())?;
    check_len(dev, OP, "x", x, d.x_dims().iter().product())?;
    check_len(
        dev,
        OP,
        "dweight",
        dweight,
        d.weight_dims().iter().product(),
    )?;
    let (tile, splits) = plan.unwrap_or_else(|| backward_weight_plan(&d));
    let (taps, pixels) = (d.c * d.kh * d.kw, d.n * d.oh * d.ow);
    let (per_split, splits) = split_pixels(pixels, splits, step_k::<T>());
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
    let p = TcConvParams {
        out,
        x: dev.addr(x),
        weight: 0,
        dy: dev.addr(dy),
        g: geom(OP, &d)?,
        k_per_split: per_split as u32,
    };
    let cfg = tc_launch(OP, tile, d.k, taps, splits)?;
    // SAFETY: x and dy hold their shapes' values of the kernel's types (checked; the kernel is
    // chosen by T); out is dweight (k*taps values) with one split, else partial with
    // splits*k*taps; slice z writes only its own k*taps values.
    unsafe { dev.launch(pass_kernel::<T>(CONV2D_BACKWARD_WEIGHT_TC, tile), cfg, &p) }?;
    if let Some(partial) = partial {
        sum_splits(dev, dweight, &partial, out_len, splits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

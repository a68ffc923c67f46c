//! Conv2d forward on tensor cores (`conv2d_tc.cu`): the implicit GEMM of
//! [`crate::conv2d::conv2d_forward`] on the tile core of `cuda/tc_gemm.cuh`, with x and weight in
//! FP32 rounded to TF32 by the kernel, or in BF16; FP32 accumulation and an FP32 y.
//!
//! Not wired into [`crate::conv2d`]'s dispatch: a precision mode chooses these kernels, and that
//! choice (and the device check: they need sm_80 or newer) belongs to the caller.

use super::cuda::{geom, ConvGeomC};
use super::{Conv2dDims, Conv2dGeom};
use crate::cuda::launch::{check_len, params};
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
    /// conv2d_tc.cu `TcConvParams`: x: (n, c, h, w), weight: (k, c, kh, kw) (FP32 or BF16, by
    /// kernel) -> y: (n, k, oh, ow) in FP32.
    pub struct TcConvParams {
        pub y: u64,
        pub x: u64,
        pub weight: u64,
        pub g: ConvGeomC,
    }
}

/// The forward kernels: [TF32, BF16][128 x 128, 64 x 64].
const CONV2D_FORWARD_TC: [[Kernel<TcConvParams>; 2]; 2] = [
    [
        kernel!(MODULE, conv2d_forward_tf32_128),
        kernel!(MODULE, conv2d_forward_tf32_64),
    ],
    [
        kernel!(MODULE, conv2d_forward_bf16_128),
        kernel!(MODULE, conv2d_forward_bf16_64),
    ],
];

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
    let (gx, gy) = tile_grid(OP, tile, m, n)?;
    let p = TcConvParams {
        y: dev.addr_mut(y),
        x: dev.addr(x),
        weight: dev.addr(weight),
        g: geom(OP, &d)?,
    };
    let cfg = LaunchConfig {
        grid: (gx, gy, 1),
        block: (TC_THREADS, 1, 1),
        shared_bytes: tc_shared_bytes(tile),
    };
    let kernel = CONV2D_FORWARD_TC[match T::PRECISION {
        TcPrecision::Tf32 => 0,
        TcPrecision::Bf16 => 1,
    }][match tile {
        GemmTile::Large => 0,
        GemmTile::Small => 1,
    }];
    // SAFETY: x, weight and y hold their shapes' values of the kernel's types (checked; the
    // kernel is chosen by T); blocks read x only at in-range pixels and weight at in-range
    // (k, tap) pairs, and write y at in-range (k, pixel) pairs.
    unsafe { dev.launch(kernel, cfg, &p) }
}

#[cfg(test)]
mod tests;

//! GEMM on tensor cores (`gemm_tc.cu`, over the tile core of `cuda/tc_gemm.cuh`): c = alpha *
//! op(a) op(b) + beta * c with FP32 accumulation and an FP32 c, the operands either
//! - FP32 buffers rounded to TF32 as they are used ([`gemm_tf32`], `mma.sync` m16n8k8), or
//! - BF16 buffers ([`gemm_bf16`], `mma.sync` m16n8k16), the copies of the mixed-precision path.
//!
//! Shapes as in [`crate::gemm`]: op(a): (M, K), op(b): (K, N) -> c: (M, N). Any M, N, K; an
//! operand whose rows are not 16-byte aligned (K or M or N not a multiple of 4 for FP32, 8 for
//! BF16, as the transposes make it the row length) takes the element-by-element copy path.
//!
//! The results differ from [`crate::gemm::sgemm`]'s by the operands' rounding (the point of these
//! products) and by the order of the FP32 additions; with the operands rounded first
//! ([`crate::precision`]) they agree within K times FP32's unit roundoff (the tests say how).
//! These kernels need sm_80 or newer: a caller checks the device before choosing them.

use super::cuda::{tile_grid, DevOperand, GemmTile};
use super::Trans;
use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::{define, Module, TC_GEMM_CUH};
use crate::cuda::{kernel, Backend, Elem, Kernel, LaunchConfig};
use crate::precision::Bf16;
use crate::{Error, Result};

/// gemm_tc.cu, embedded (a module of its own beside gemm.cu), and the Rust twin of its
/// parameter struct.
pub const MODULE: Module = Module {
    name: "gemm_tc",
    path: "gemm/gemm_tc.cu",
    source: include_str!("gemm_tc.cu"),
    headers: &[],
    params: &[<TcGemmParams as crate::cuda::KernelParams>::LAYOUT],
};

params! {
    /// gemm_tc.cu `TcGemmParams`: op(a): (m, k), op(b): (k, n) -> c: (m, n); a and b hold FP32
    /// (the `gemm_tf32_*` kernels) or BF16 (`gemm_bf16_*`), transposed or not as the kernel's
    /// suffix says.
    pub struct TcGemmParams {
        pub c: u64,
        pub a: u64,
        pub b: u64,
        pub alpha: f32,
        pub beta: f32,
        pub m: u32,
        pub n: u32,
        pub k: u32,
    }
}

/// Threads of a tensor-core block (4 warps): `TC_THREADS` of tc_gemm.cuh.
pub const TC_THREADS: u32 = define(TC_GEMM_CUH.source, "TC_THREADS");

/// Shared-memory stages of the tensor-core tiles: `TC_STAGES` of tc_gemm.cuh.
pub const TC_STAGES: u32 = define(TC_GEMM_CUH.source, "TC_STAGES");

/// Dynamic shared memory of a tensor-core block in tile `tile`: [`TC_STAGES`] stages, each an A
/// and a B tile of 128 bytes of k per row or column (32 TF32 or 64 BF16 values): 96 KiB for
/// 128 x 128, 48 KiB for 64 x 64, in either precision.
pub fn tc_shared_bytes(tile: GemmTile) -> u32 {
    let (bm, bn) = tile.dims();
    TC_STAGES * (bm + bn) as u32 * 128
}

/// The operand format of a tensor-core product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcPrecision {
    /// FP32 operands rounded to TF32 (`cvt.rna.tf32.f32`) in the kernel.
    Tf32,
    /// BF16 operands.
    Bf16,
}

/// An element type a tensor-core product reads its operands in: f32 (TF32) or [`Bf16`].
pub trait TcElem: Elem {
    const PRECISION: TcPrecision;
}
impl TcElem for f32 {
    const PRECISION: TcPrecision = TcPrecision::Tf32;
}
impl TcElem for Bf16 {
    const PRECISION: TcPrecision = TcPrecision::Bf16;
}

/// The kernels of gemm_tc.cu: [TF32, BF16][128 x 128, 64 x 64][transpose pair of (a, b): nn, nt,
/// tn, tt].
const TC_GEMM_KERNELS: [[[Kernel<TcGemmParams>; 4]; 2]; 2] = [
    [
        [
            kernel!(MODULE, gemm_tf32_128_nn),
            kernel!(MODULE, gemm_tf32_128_nt),
            kernel!(MODULE, gemm_tf32_128_tn),
            kernel!(MODULE, gemm_tf32_128_tt),
        ],
        [
            kernel!(MODULE, gemm_tf32_64_nn),
            kernel!(MODULE, gemm_tf32_64_nt),
            kernel!(MODULE, gemm_tf32_64_tn),
            kernel!(MODULE, gemm_tf32_64_tt),
        ],
    ],
    [
        [
            kernel!(MODULE, gemm_bf16_128_nn),
            kernel!(MODULE, gemm_bf16_128_nt),
            kernel!(MODULE, gemm_bf16_128_tn),
            kernel!(MODULE, gemm_bf16_128_tt),
        ],
        [
            kernel!(MODULE, gemm_bf16_64_nn),
            kernel!(MODULE, gemm_bf16_64_nt),
            kernel!(MODULE, gemm_bf16_64_tn),
            kernel!(MODULE, gemm_bf16_64_tt),
        ],
    ],
];

/// The kernel of a precision, a tile and the transposes of a and b.
pub fn tc_gemm_kernel(
    precision: TcPrecision,
    tile: GemmTile,
    trans_a: Trans,
    trans_b: Trans,
) -> Kernel<TcGemmParams> {
    let p = match precision {
        TcPrecision::Tf32 => 0,
        TcPrecision::Bf16 => 1,
    };
    let t = match tile {
        GemmTile::Large => 0,
        GemmTile::Small => 1,
    };
    let pair = 2 * usize::from(trans_a == Trans::Yes) + usize::from(trans_b == Trans::Yes);
    TC_GEMM_KERNELS[p][t][pair]
}

/// One operand on the device: a row-major matrix of `rows` x `cols` values of `T`, and whether the
/// product uses its transpose (as [`DevOperand`], for any element type).
pub struct TcOperand<'a, B: Backend, T: Elem> {
    pub data: &'a B::Buf<T>,
    pub rows: usize,
    pub cols: usize,
    pub trans: Trans,
}

impl<B: Backend, T: Elem> TcOperand<'_, B, T> {
    /// The (rows, cols) of op(x).
    fn op_dims(&self) -> (usize, usize) {
        match self.trans {
            Trans::No => (self.rows, self.cols),
            Trans::Yes => (self.cols, self.rows),
        }
    }
}

impl<'a, B: Backend> From<DevOperand<'a, B>> for TcOperand<'a, B, f32> {
    fn from(x: DevOperand<'a, B>) -> Self {
        TcOperand {
            data: x.data,
            rows: x.rows,
            cols: x.cols,
            trans: x.trans,
        }
    }
}

/// c = alpha * op(a) op(b) + beta * c on tensor cores, a and b rounded to TF32. op(a): (M, K),
/// op(b): (K, N) -> c: (M, N); with `beta == 0`, `c` is only written. The block tile is
/// [`GemmTile::for_output`]'s for (M, N), as [`super::cuda::sgemm`] picks it.
///
/// # Errors
/// As [`gemm_tc_tiled`].
pub fn gemm_tf32<B: Backend>(
    dev: &B,
    alpha: f32,
    a: DevOperand<'_, B>,
    b: DevOperand<'_, B>,
    beta: f32,
    c: &mut B::Buf<f32>,
) -> Result<()> {
    let (a, b): (TcOperand<'_, B, f32>, TcOperand<'_, B, f32>) = (a.into(), b.into());
    let tile = GemmTile::for_output(a.op_dims().0, b.op_dims().1, 1);
    gemm_tc_tiled(dev, tile, alpha, a, b, beta, c)
}

/// c = alpha * op(a) op(b) + beta * c on tensor cores with BF16 a and b, as [`gemm_tf32`].
///
/// # Errors
/// As [`gemm_tc_tiled`].
pub fn gemm_bf16<B: Backend>(
    dev: &B,
    alpha: f32,
    a: TcOperand<'_, B, Bf16>,
    b: TcOperand<'_, B, Bf16>,
    beta: f32,
    c: &mut B::Buf<f32>,
) -> Result<()> {
    let tile = GemmTile::for_output(a.op_dims().0, b.op_dims().1, 1);
    gemm_tc_tiled(dev, tile, alpha, a, b, beta, c)
}

/// The tensor-core GEMM in the block tile `tile`, operands of `T` (f32 for TF32, [`Bf16`]).
///
/// # Errors
/// [`Error::Shape`] if an operand's buffer does not hold rows x cols values, the inner dimensions
/// differ, or `c` does not hold M x N values; [`Error::Invalid`] if a count exceeds the kernels'
/// 32-bit indices or M the grid.
pub fn gemm_tc_tiled<B: Backend, T: TcElem>(
    dev: &B,
    tile: GemmTile,
    alpha: f32,
    a: TcOperand<'_, B, T>,
    b: TcOperand<'_, B, T>,
    beta: f32,
    c: &mut B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda gemm_tc";
    for (what, x) in [("a", &a), ("b", &b)] {
        check_len(dev, OP, what, x.data, x.rows * x.cols)?;
        count(OP, x.rows * x.cols)?;
    }
    let ((m, k), (kb, n)) = (a.op_dims(), b.op_dims());
    if k != kb {
        return Err(Error::Shape {
            op: OP,
            msg: format!("op(a) is ({m}, {k}) but op(b) is ({kb}, {n})"),
        });
    }
    check_len(dev, OP, "c", c, m * n)?;
    count(OP, m * n)?;
    if m * n == 0 {
        return Ok(());
    }
    let (gx, gy) = tile_grid(OP, tile, m, n)?;
    let p = TcGemmParams {
        c: dev.addr_mut(c),
        a: dev.addr(a.data),
        b: dev.addr(b.data),
        alpha,
        beta,
        m: m as u32,
        n: n as u32,
        k: k as u32,
    };
    let kernel = tc_gemm_kernel(T::PRECISION, tile, a.trans, b.trans);
    let cfg = LaunchConfig {
        grid: (gx, gy, 1),
        block: (TC_THREADS, 1, 1),
        shared_bytes: tc_shared_bytes(tile),
    };
    // SAFETY: a holds m*k values, b k*n and c m*n (checked, each below 2^32) of the kernel's
    // element types (the kernel is chosen by T); blocks read only in-range elements and write only
    // in-range rows and columns; every kernel of gemm_tc.cu takes TcGemmParams, and the one of the
    // transpose pair reads a and b with the strides the pair gives.
    unsafe { dev.launch(kernel, cfg, &p) }
}

#[cfg(test)]
mod tests;

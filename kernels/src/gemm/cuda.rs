//! SGEMM on the device, as [`crate::gemm::sgemm`]: the tiled kernel of gemm.cu, and the choice
//! of its tile size that the convolutions share.

use super::Trans;
use crate::cuda::launch::{check_len, count, params};
use crate::cuda::source::{define, module, Module, TILED_GEMM_CUH};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::{Error, Result};

/// gemm.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(gemm, headers: [], params: [SgemmParams]);

params! {
    /// gemm.cu `SgemmParams`: op(a): (m, k), op(b): (k, n) -> c: (m, n).
    pub struct SgemmParams {
        pub c: u64,
        pub a: u64,
        pub b: u64,
        pub alpha: f32,
        pub beta: f32,
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub trans_a: u32,
        pub trans_b: u32,
    }
}

pub const SGEMM_128: Kernel<SgemmParams> = kernel!(MODULE, sgemm_128);
pub const SGEMM_64: Kernel<SgemmParams> = kernel!(MODULE, sgemm_64);

/// Threads of a tiled-product block, and the depth of one k step: `GEMM_THREADS` and
/// `GEMM_TILE_K` of tiled_gemm.cuh.
pub const GEMM_THREADS: u32 = define(TILED_GEMM_CUH.source, "GEMM_THREADS");
pub const GEMM_TILE_K: usize = define(TILED_GEMM_CUH.source, "GEMM_TILE_K") as usize;

/// Multiprocessors of an H100 SXM: a grid of fewer blocks of the large tile leaves some idle.
const WAVE_BLOCKS: usize = 132;

/// The block tile of a tiled product (tiled_gemm.cuh): which kernel of a pair runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmTile {
    /// 128 x 128 outputs per block, 8 x 8 per thread (the `_128` kernels).
    Large,
    /// 64 x 64 outputs per block, 4 x 4 per thread (the `_64` kernels).
    Small,
}

impl GemmTile {
    /// Both sizes, for tests that run a product in each.
    pub const ALL: [GemmTile; 2] = [GemmTile::Large, GemmTile::Small];

    /// The (rows, columns) of its output tile.
    pub fn dims(self) -> (usize, usize) {
        match self {
            GemmTile::Large => (128, 128),
            GemmTile::Small => (64, 64),
        }
    }

    /// The tile for an (m, n) output summed in `depth` independent slices (1 unless the sum is
    /// split): the large tile (twice the multiply-adds per shared-memory read) when its blocks
    /// fill the GPU's multiprocessors at least once, else the small one (four times the blocks;
    /// the FC layers at batch 250, m = 250).
    pub fn for_output(m: usize, n: usize, depth: usize) -> GemmTile {
        let (bm, bn) = GemmTile::Large.dims();
        if m.div_ceil(bm) * n.div_ceil(bn) * depth >= WAVE_BLOCKS {
            GemmTile::Large
        } else {
            GemmTile::Small
        }
    }
}

/// One operand on the device: a row-major matrix of `rows` x `cols` values, and whether the
/// product uses its transpose (as [`crate::gemm::Operand`]).
pub struct DevOperand<'a, B: Backend> {
    pub data: &'a B::Buf<f32>,
    pub rows: usize,
    pub cols: usize,
    pub trans: Trans,
}

impl<B: Backend> DevOperand<'_, B> {
    /// The (rows, cols) of op(x).
    fn op_dims(&self) -> (usize, usize) {
        match self.trans {
            Trans::No => (self.rows, self.cols),
            Trans::Yes => (self.cols, self.rows),
        }
    }
}

/// The grid of a tiled product with an (m, n) output: one block per tile.
pub(crate) fn tile_grid(
    op: &'static str,
    tile: GemmTile,
    m: usize,
    n: usize,
) -> Result<(u32, u32)> {
    let (bm, bn) = tile.dims();
    let (gx, gy) = (n.div_ceil(bn), m.div_ceil(bm));
    if gy > 65535 {
        return Err(Error::Invalid {
            op,
            msg: format!("{m} output rows exceed the grid's 65535 x {bm}"),
        });
    }
    Ok((count(op, gx)?, gy as u32))
}

/// c = alpha * op(a) op(b) + beta * c on the device. op(a): (M, K), op(b): (K, N) -> c: (M, N);
/// with `beta == 0`, `c` is only written (a NaN in it does not survive). Runs in the block tile
/// [`GemmTile::for_output`] picks for (M, N); either tile gives the same bits.
///
/// # Errors
/// [`Error::Shape`] if an operand's buffer does not hold rows x cols values, the inner
/// dimensions differ, or `c` does not hold M x N values.
pub fn sgemm<B: Backend>(
    dev: &B,
    alpha: f32,
    a: DevOperand<'_, B>,
    b: DevOperand<'_, B>,
    beta: f32,
    c: &mut B::Buf<f32>,
) -> Result<()> {
    let tile = GemmTile::for_output(a.op_dims().0, b.op_dims().1, 1);
    sgemm_tiled(dev, tile, alpha, a, b, beta, c)
}

/// [`sgemm`] with the block tile `tile`.
pub(crate) fn sgemm_tiled<B: Backend>(
    dev: &B,
    tile: GemmTile,
    alpha: f32,
    a: DevOperand<'_, B>,
    b: DevOperand<'_, B>,
    beta: f32,
    c: &mut B::Buf<f32>,
) -> Result<()> {
    const OP: &str = "cuda sgemm";
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
    let p = SgemmParams {
        c: dev.addr_mut(c),
        a: dev.addr(a.data),
        b: dev.addr(b.data),
        alpha,
        beta,
        m: m as u32,
        n: n as u32,
        k: k as u32,
        trans_a: u32::from(a.trans == Trans::Yes),
        trans_b: u32::from(b.trans == Trans::Yes),
    };
    let cfg = LaunchConfig {
        grid: (gx, gy, 1),
        block: (GEMM_THREADS, 1, 1),
        shared_bytes: 0,
    };
    let kernel = match tile {
        GemmTile::Large => SGEMM_128,
        GemmTile::Small => SGEMM_64,
    };
    // SAFETY: a holds m*k values, b k*n and c m*n (checked, each below 2^32); blocks read and
    // write only in-range rows and columns; both kernels take SgemmParams.
    unsafe { dev.launch(kernel, cfg, &p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiles' sizes are tiled_gemm.cuh's `GemmLarge` and `GemmSmall`.
    #[test]
    fn tile_sizes_are_those_of_tiled_gemm_cuh() {
        for (tile, name) in [
            (GemmTile::Large, "GemmLarge"),
            (GemmTile::Small, "GemmSmall"),
        ] {
            let (bm, bn) = tile.dims();
            let decl = format!("using {name} = GemmTile<{bm}, {bn}>;");
            assert!(
                TILED_GEMM_CUH.source.contains(&decl),
                "no `{decl}` in tiled_gemm.cuh"
            );
        }
    }
}

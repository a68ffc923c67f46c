//! SGEMM on the device, as [`crate::gemm::sgemm`]: the tiled kernel of gemm.cu.

use super::{check_len, count};
use crate::cuda::launch::{Backend, Kernel, LaunchConfig};
use crate::cuda::params::SgemmParams;
use crate::gemm::Trans;
use crate::{Error, Result};

pub const SGEMM: Kernel<SgemmParams> = Kernel::new("gemm", "sgemm");

/// Rows and columns of the output tile of one block, and its threads; tiled_gemm.cuh.
pub const GEMM_TILE_M: u32 = 64;
pub const GEMM_TILE_N: u32 = 64;
pub const GEMM_THREADS: u32 = 256;

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

/// The grid of a tiled product with an (m, n) output: one block per 64 x 64 tile.
pub(super) fn tile_grid(op: &'static str, m: usize, n: usize) -> Result<(u32, u32)> {
    let (gx, gy) = (
        n.div_ceil(GEMM_TILE_N as usize),
        m.div_ceil(GEMM_TILE_M as usize),
    );
    if gy > 65535 {
        return Err(Error::Invalid {
            op,
            msg: format!("{m} output rows exceed the grid's 65535 x {GEMM_TILE_M}"),
        });
    }
    Ok((count(op, gx)?, gy as u32))
}

/// c = alpha * op(a) op(b) + beta * c on the device. op(a): (M, K), op(b): (K, N) -> c: (M, N);
/// with `beta == 0`, `c` is only written (a NaN in it does not survive).
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
    let (gx, gy) = tile_grid(OP, m, n)?;
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
    // SAFETY: a holds m*k values, b k*n and c m*n (checked, each below 2^32); blocks read and
    // write only in-range rows and columns.
    unsafe { dev.launch(SGEMM, cfg, &p) }
}

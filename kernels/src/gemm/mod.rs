//! The one GEMM entry point: every matrix product of the project goes through [`sgemm`].
//!
//! Matrices are row-major and contiguous; each operand says whether the product uses it as stored
//! or transposed, so no caller ever copies a matrix just to transpose it.
//!
//! # Shapes
//! c = alpha * op(a) op(b) + beta * c, with op(a): (M, K), op(b): (K, N), c: (M, N).
//! An operand stored (R, S) is op(x) = x, (R, S), with [`Trans::No`], and op(x) = x^T, (S, R), with
//! [`Trans::Yes`].

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
mod shallow;
pub mod tc;

pub(crate) use shallow::shallow_at;

use tensor_core::Tensor;

use crate::cuda::{dispatch, TensorBackend};
use crate::precision::cuda::bf16_copy;
use crate::precision::Precision;
use crate::{Error, Result};

/// Whether a product uses an operand as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trans {
    No,
    Yes,
}

/// One operand of a product: a row-major matrix of `rows` x `cols` values, and whether the product
/// uses its transpose.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub trans: Trans,
}

impl<'a> Operand<'a> {
    /// The matrix `data`, (rows, cols), used as stored.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Operand<'a> {
        Operand {
            data,
            rows,
            cols,
            trans: Trans::No,
        }
    }

    /// The same matrix, used transposed: op(x) = x^T, (cols, rows).
    pub fn t(self) -> Operand<'a> {
        Operand {
            trans: Trans::Yes,
            ..self
        }
    }

    /// The (rows, cols) of op(x).
    pub fn op_dims(&self) -> (usize, usize) {
        match self.trans {
            Trans::No => (self.rows, self.cols),
            Trans::Yes => (self.cols, self.rows),
        }
    }
}

/// Checks that `a`, `b` and `c` hold an (M, K) x (K, N) -> (M, N) product.
fn check(op: &'static str, a: &Operand<'_>, b: &Operand<'_>, c_len: usize) -> Result<()> {
    for (what, x) in [("a", a), ("b", b)] {
        if x.data.len() != x.rows * x.cols {
            return Err(Error::Shape {
                op,
                msg: format!(
                    "{what} is declared ({}, {}) but holds {} values",
                    x.rows,
                    x.cols,
                    x.data.len()
                ),
            });
        }
    }
    let ((m, k), (kb, n)) = (a.op_dims(), b.op_dims());
    if k != kb {
        return Err(Error::Shape {
            op,
            msg: format!("op(a) is ({m}, {k}) but op(b) is ({kb}, {n})"),
        });
    }
    if c_len != m * n {
        return Err(Error::Shape {
            op,
            msg: format!(
                "c holds {c_len} values, the ({m}, {k}) x ({kb}, {n}) product needs {m} x {n}"
            ),
        });
    }
    Ok(())
}

/// c = alpha * op(a) op(b) + beta * c, threaded with rayon when the product is large.
/// With `beta == 0`, `c` is only written (as in BLAS, a NaN in it does not survive).
///
/// Bit-identical for any number of threads (see `cpu.rs`).
///
/// # Errors
/// [`Error::Shape`] if an operand's data does not hold rows x cols values, the inner dimensions
/// differ, or `c` does not hold M x N values.
pub fn sgemm(alpha: f32, a: Operand<'_>, b: Operand<'_>, beta: f32, c: &mut [f32]) -> Result<()> {
    check("sgemm", &a, &b, c.len())?;
    cpu::sgemm(alpha, &a, &b, beta, c, true);
    Ok(())
}

/// As [`sgemm`], always on the calling thread: for callers that already run independent
/// products in parallel (one per image of a batch).
///
/// # Errors
/// As [`sgemm`].
pub fn sgemm_serial(
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut [f32],
) -> Result<()> {
    check("sgemm", &a, &b, c.len())?;
    cpu::sgemm(alpha, &a, &b, beta, c, false);
    Ok(())
}

/// The matrix of a rank-2 tensor as an operand.
fn operand<'a>(
    op: &'static str,
    what: &'static str,
    x: &'a Tensor,
    trans: Trans,
) -> Result<Operand<'a>> {
    match *x.dims() {
        [rows, cols] => Ok(Operand {
            data: x.as_slice()?,
            rows,
            cols,
            trans,
        }),
        _ => Err(Error::Shape {
            op,
            msg: format!("{what} has shape {}, expected a matrix (rank 2)", x.shape()),
        }),
    }
}

/// The tensor form of [`sgemm`]: c = alpha * op(a) op(b) + beta * c on rank-2 tensors.
///
/// # Shapes
/// op(a): (M, K), op(b): (K, N) -> c: (M, N), overwritten when `beta == 0`, accumulated into
/// (scaled by `beta`) otherwise.
///
/// # Errors
/// [`Error::Shape`] naming the shapes if a tensor is not rank 2, the inner dimensions differ or
/// `c` is not (M, N).
pub fn matmul(
    alpha: f32,
    a: &Tensor,
    ta: Trans,
    b: &Tensor,
    tb: Trans,
    beta: f32,
    c: &mut Tensor,
) -> Result<()> {
    matmul_in(Precision::Fp32, alpha, a, ta, b, tb, beta, c)
}

/// As [`matmul`], with the operands in `precision`: on a CUDA device, TF32 or BF16 run the
/// tensor-core GEMMs ([`tc`]; BF16 on copies of a and b), FP32 [`cuda::sgemm`].
///
/// # Errors
/// As [`matmul`]; [`Error::Invalid`] for TF32 or BF16 on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn matmul_in(
    precision: Precision,
    alpha: f32,
    a: &Tensor,
    ta: Trans,
    b: &Tensor,
    tb: Trans,
    beta: f32,
    c: &mut Tensor,
) -> Result<()> {
    const OP: &str = "matmul";
    // (rows, cols) of op(x), for a rank-2 x.
    let op_dims = |what: &'static str, x: &Tensor, t: Trans| match *x.dims() {
        [rows, cols] => Ok(match t {
            Trans::No => (rows, cols),
            Trans::Yes => (cols, rows),
        }),
        _ => Err(Error::Shape {
            op: OP,
            msg: format!("{what} has shape {}, expected a matrix (rank 2)", x.shape()),
        }),
    };
    let ((m, k), (kb, n)) = (op_dims("a", a, ta)?, op_dims("b", b, tb)?);
    if k != kb || c.dims() != [m, n] {
        let describe = |what: &str, x: &Tensor, t: Trans| match t {
            Trans::No => format!("{what} {}", x.shape()),
            Trans::Yes => format!("{what}^T with {what} {}", x.shape()),
        };
        return Err(Error::Shape {
            op: OP,
            msg: format!(
                "{} times {} does not give c {}",
                describe("a", a, ta),
                describe("b", b, tb),
                c.shape()
            ),
        });
    }
    dispatch!(OP, [("a", a), ("b", b), ("c", c)],
        cpu => {
            let (mut oa, mut ob) = (operand(OP, "a", a, ta)?, operand(OP, "b", b, tb)?);
            // BF16 on the CPU: the FP32 GEMM on operands rounded to BF16 (the same values a
            // BF16 kernel multiplies, FP32 sums; a linear layer is a few % of a CPU step).
            let rounded = precision.cpu_operands(OP, [oa.data, ob.data])?;
            if let Some([ra, rb]) = &rounded {
                (oa.data, ob.data) = (ra, rb);
            }
            sgemm(alpha, oa, ob, beta, c.as_mut_slice()?)
        },
        cuda |dev| => {
            let (oa, ob) = (
                cuda::DevOperand {
                    data: dev.buf(OP, a)?,
                    rows: a.dims()[0],
                    cols: a.dims()[1],
                    trans: ta,
                },
                cuda::DevOperand {
                    data: dev.buf(OP, b)?,
                    rows: b.dims()[0],
                    cols: b.dims()[1],
                    trans: tb,
                },
            );
            let c = dev.buf_mut(OP, c)?;
            match precision {
                Precision::Fp32 => cuda::sgemm(dev, alpha, oa, ob, beta, c),
                Precision::Tf32 => tc::gemm_tf32(dev, alpha, oa, ob, beta, c),
                Precision::Bf16 => {
                    let (ah, bh) = (bf16_copy(dev, oa.data)?, bf16_copy(dev, ob.data)?);
                    let half = |x: &cuda::DevOperand<'_, _>, data| tc::TcOperand {
                        data,
                        rows: x.rows,
                        cols: x.cols,
                        trans: x.trans,
                    };
                    tc::gemm_bf16(dev, alpha, half(&oa, &ah), half(&ob, &bh), beta, c)
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_shapes_are_errors_naming_the_op() {
        let a = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        let e = sgemm(
            1.0,
            Operand::new(&a, 2, 3),
            Operand::new(&a, 2, 3),
            0.0,
            &mut c,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "sgemm: op(a) is (2, 3) but op(b) is (2, 3)");
        let e = sgemm(
            1.0,
            Operand::new(&a, 2, 2),
            Operand::new(&a, 2, 3),
            0.0,
            &mut c,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "sgemm: a is declared (2, 2) but holds 6 values"
        );
        let e = sgemm(
            1.0,
            Operand::new(&a, 2, 3),
            Operand::new(&a, 2, 3).t(),
            0.0,
            &mut c[..3],
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("sgemm: c holds 3 values"), "{e}");
    }

    #[test]
    fn matmul_on_tensors() {
        // (2, 3) x (2, 3)^T = (2, 2).
        let a = Tensor::from_vec([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let mut c = Tensor::full([2, 2], 1.0);
        matmul(1.0, &a, Trans::No, &a, Trans::Yes, 1.0, &mut c).unwrap();
        assert_eq!(c.as_slice().unwrap(), &[15.0, 33.0, 33.0, 78.0]);
        let mut wrong = Tensor::zeros([3, 3]);
        let e = matmul(1.0, &a, Trans::No, &a, Trans::Yes, 0.0, &mut wrong).unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul: a (2, 3) times b^T with b (2, 3) does not give c (3, 3)"
        );
        let v = Tensor::zeros([6]);
        let e = matmul(1.0, &v, Trans::No, &a, Trans::No, 0.0, &mut c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "matmul: a has shape (6,), expected a matrix (rank 2)"
        );
    }
}

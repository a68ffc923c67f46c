//! Elementwise sums, for the residual connection y = h1 + h2 and for gathering the gradient of a
//! tensor that feeds two branches (dh1 = dy + dh1 through the second branch).

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;

use tensor_core::Tensor;

use crate::cuda::{dispatch, TensorBackend};

use crate::Result;

/// y = a + b, elementwise.
///
/// # Shapes
/// a, b: any shape, the same -> y: the same shape, overwritten.
///
/// # Errors
/// b's or y's shape differs from a's.
pub fn add(y: &mut Tensor, a: &Tensor, b: &Tensor) -> Result<()> {
    const OP: &str = "add";
    b.expect_shape(OP, "b", a.dims())?;
    y.expect_shape(OP, "y", a.dims())?;
    dispatch!(OP, [("y", y), ("a", a), ("b", b)],
        cpu => {
            cpu::add(y.as_mut_slice()?, a.as_slice()?, b.as_slice()?);
            Ok(())
        },
        cuda |dev| => cuda::add(dev, dev.buf_mut(OP, y)?, dev.buf(OP, a)?, dev.buf(OP, b)?),
    )
}

/// acc += b, elementwise.
///
/// # Shapes
/// acc, b: any shape, the same; acc is accumulated into.
///
/// # Errors
/// b's shape differs from acc's.
pub fn add_assign(acc: &mut Tensor, b: &Tensor) -> Result<()> {
    const OP: &str = "add_assign";
    b.expect_shape(OP, "b", acc.dims())?;
    dispatch!(OP, [("acc", acc), ("b", b)],
        cpu => {
            cpu::add_assign(acc.as_mut_slice()?, b.as_slice()?);
            Ok(())
        },
        cuda |dev| => cuda::add_assign(dev, dev.buf_mut(OP, acc)?, dev.buf(OP, b)?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_known_values() {
        let a = Tensor::from_vec([2, 2], vec![1.0, -2.0, 0.5, 4.0]).unwrap();
        let b = Tensor::from_vec([2, 2], vec![0.25, 2.0, -3.0, 1.0]).unwrap();
        let mut y = Tensor::full([2, 2], f32::NAN);
        add(&mut y, &a, &b).unwrap();
        assert_eq!(y.to_vec(), vec![1.25, 0.0, -2.5, 5.0]);
        let mut acc = a.clone();
        add_assign(&mut acc, &b).unwrap();
        assert_eq!(acc, y);
        add_assign(&mut acc, &b).unwrap();
        assert_eq!(acc.to_vec(), vec![1.5, 2.0, -5.5, 6.0]);
    }

    #[test]
    fn large_inputs_split_across_threads_give_the_same_bits() {
        let n = 2 * cpu::CHUNK + 5;
        let a = Tensor::from_vec([n], (0..n).map(|i| (i % 13) as f32 * 0.1).collect()).unwrap();
        let b = Tensor::from_vec([n], (0..n).map(|i| (i % 7) as f32 * -0.3).collect()).unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut y = Tensor::zeros([n]);
                    add(&mut y, &a, &b).unwrap();
                    let mut acc = a.clone();
                    add_assign(&mut acc, &b).unwrap();
                    (y, acc)
                })
        };
        let (y, acc) = run(2);
        assert_eq!((y.clone(), acc.clone()), run(1));
        assert_eq!(y, acc);
        assert_eq!(
            y.as_slice().unwrap()[n - 1],
            a.to_vec()[n - 1] + b.to_vec()[n - 1]
        );
    }

    #[test]
    fn bad_shapes_name_the_op_and_the_shapes() {
        let a = Tensor::zeros([2, 3]);
        let e = add(&mut Tensor::zeros([2, 3]), &a, &Tensor::zeros([3, 2])).unwrap_err();
        assert_eq!(e.to_string(), "add: b has shape (3, 2), expected (2, 3)");
        let e = add_assign(&mut Tensor::zeros([2, 3]), &Tensor::zeros([2, 3, 1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add_assign: b has shape (2, 3, 1), expected (2, 3)"
        );
    }
}

//! ReLU: y = max(x, 0); dx = dy where x > 0, else 0 (the subgradient 0 at x = 0, as TensorFlow
//! and PyTorch take it).

mod cpu;

use tensor_core::{Device, Tensor};

use crate::cuda::tensor::on_cuda;
use crate::cuda::{ops, TensorBackend};

use crate::Result;

/// y = max(x, 0), elementwise.
///
/// # Shapes
/// x: any shape -> y: the same shape, overwritten.
///
/// # Errors
/// y's shape differs from x's.
pub fn relu_forward(y: &mut Tensor, x: &Tensor) -> Result<()> {
    const OP: &str = "relu_forward";
    y.expect_shape(OP, "y", x.dims())?;
    match Tensor::common_device(OP, &[("y", y), ("x", x)])? {
        Device::Cpu => cpu::forward(y.as_mut_slice()?, x.as_slice()?),
        d => on_cuda!(OP, d, |b| ops::relu_forward(
            b,
            b.buf_mut(OP, y)?,
            b.buf(OP, x)?
        ))?,
    }
    Ok(())
}

/// dx = dy * [x > 0], elementwise; `x` is the forward's input.
///
/// # Shapes
/// dy, x: any shape, the same -> dx: the same shape, overwritten.
///
/// # Errors
/// dy's or dx's shape differs from x's.
pub fn relu_backward(dx: &mut Tensor, dy: &Tensor, x: &Tensor) -> Result<()> {
    const OP: &str = "relu_backward";
    dy.expect_shape(OP, "dy", x.dims())?;
    dx.expect_shape(OP, "dx", x.dims())?;
    match Tensor::common_device(OP, &[("dx", dx), ("dy", dy), ("x", x)])? {
        Device::Cpu => cpu::backward(dx.as_mut_slice()?, dy.as_slice()?, x.as_slice()?),
        d => on_cuda!(OP, d, |b| ops::relu_backward(
            b,
            b.buf_mut(OP, dx)?,
            b.buf(OP, dy)?,
            b.buf(OP, x)?
        ))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_of_known_values() {
        let x = Tensor::from_vec([2, 3], vec![-1.5, 0.0, 2.0, 3.5, -0.25, 1e-7]).unwrap();
        let mut y = Tensor::full([2, 3], f32::NAN);
        relu_forward(&mut y, &x).unwrap();
        assert_eq!(y.to_vec(), vec![0.0, 0.0, 2.0, 3.5, 0.0, 1e-7]);
        let dy = Tensor::from_vec([2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let mut dx = Tensor::full([2, 3], f32::NAN);
        relu_backward(&mut dx, &dy, &x).unwrap();
        assert_eq!(dx.to_vec(), vec![0.0, 0.0, 3.0, 4.0, 0.0, 6.0]);
    }

    #[test]
    fn nan_propagates_forward() {
        let x = Tensor::from_vec([3], vec![f32::NAN, -1.0, 1.0]).unwrap();
        let mut y = Tensor::zeros([3]);
        relu_forward(&mut y, &x).unwrap();
        let y = y.to_vec();
        assert!(y[0].is_nan() && y[1] == 0.0 && y[2] == 1.0, "{y:?}");
    }

    #[test]
    fn large_inputs_split_across_threads_give_the_same_bits() {
        // Longer than one parallel chunk, so two threads really share the work.
        let n = 3 * cpu::CHUNK + 17;
        let x = Tensor::from_vec(
            [n],
            (0..n).map(|i| ((i * 37 % 101) as f32) - 50.0).collect(),
        )
        .unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut y = Tensor::zeros([n]);
                    relu_forward(&mut y, &x).unwrap();
                    let mut dx = Tensor::zeros([n]);
                    relu_backward(&mut dx, &x, &x).unwrap();
                    (y, dx)
                })
        };
        let (y, dx) = run(2);
        assert_eq!((y.clone(), dx.clone()), run(1));
        let want: Vec<f32> = x.to_vec().iter().map(|&v| v.max(0.0)).collect();
        assert_eq!(y.to_vec(), want);
        assert_eq!(dx.to_vec(), want, "dy = x gives dx = relu(x)");
    }

    #[test]
    fn bad_shapes_name_the_op_and_the_shapes() {
        let x = Tensor::zeros([2, 3]);
        let e = relu_forward(&mut Tensor::zeros([3, 2]), &x).unwrap_err();
        assert_eq!(
            e.to_string(),
            "relu_forward: y has shape (3, 2), expected (2, 3)"
        );
        let e = relu_backward(&mut Tensor::zeros([2, 3]), &Tensor::zeros([6]), &x).unwrap_err();
        assert_eq!(
            e.to_string(),
            "relu_backward: dy has shape (6,), expected (2, 3)"
        );
    }
}

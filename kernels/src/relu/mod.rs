//! ReLU: y = max(x, 0); dx = dy where x > 0, else 0 (the subgradient 0 at x = 0, as TensorFlow
//! and PyTorch take it).

pub(crate) mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;

use tensor_core::{Device, Shape, Tensor};

use crate::cuda::{dispatch, TensorBackend};

use crate::{add::add_assign, Result};

/// What a ReLU's backward needs from its forward: where the input was > 0.
///
/// The in-place forwards below overwrite their input, so they keep this instead of x. On the CPU
/// it is one byte per value, a quarter of x's memory; on a GPU it is a copy of x itself, what the
/// `relu_backward` kernel reads.
#[derive(Debug, Clone, PartialEq)]
pub enum ReluMask {
    /// keep: the forward's shape, 1 where the input was > 0, else 0.
    Bytes { shape: Shape, keep: Vec<u8> },
    /// x: the forward's input, on its device.
    Input(Tensor),
}

impl ReluMask {
    /// The shape of the forward's input.
    pub fn shape(&self) -> &Shape {
        match self {
            ReluMask::Bytes { shape, .. } => shape,
            ReluMask::Input(x) => x.shape(),
        }
    }
}

/// x = max(x, 0) in place (a NaN stays NaN); returns the mask for [`relu_backward_in_place`].
///
/// On the CPU one pass that reads x once and writes it back with a byte mask, where
/// [`relu_forward`] writes a second tensor and its caller keeps x alive for the backward.
///
/// # Shapes
/// x: any shape, overwritten with y.
///
/// # Errors
/// A device error if x cannot be read or written.
pub fn relu_forward_in_place(x: &mut Tensor) -> Result<ReluMask> {
    match x.device() {
        Device::Cpu => {
            let mut keep = vec![0u8; x.len()];
            cpu::forward_in_place(x.as_mut_slice()?, &mut keep);
            Ok(ReluMask::Bytes {
                shape: x.shape().clone(),
                keep,
            })
        }
        _ => {
            let input = x.clone();
            relu_forward(x, &input)?;
            Ok(ReluMask::Input(input))
        }
    }
}

/// acc = max(acc + b, 0) in place: the residual sum and its ReLU in one pass on the CPU (on a
/// GPU, [`add_assign`] then [`relu_forward_in_place`]). Returns the mask of acc + b.
///
/// # Shapes
/// acc, b: any shape, the same; acc is overwritten with y.
///
/// # Errors
/// b's shape differs from acc's; mixed devices.
pub fn add_relu_forward_in_place(acc: &mut Tensor, b: &Tensor) -> Result<ReluMask> {
    const OP: &str = "add_relu_forward_in_place";
    b.expect_shape(OP, "b", acc.dims())?;
    match Tensor::common_device(OP, &[("acc", acc), ("b", b)])? {
        Device::Cpu => {
            let mut keep = vec![0u8; acc.len()];
            cpu::add_forward_in_place(acc.as_mut_slice()?, b.as_slice()?, &mut keep);
            Ok(ReluMask::Bytes {
                shape: acc.shape().clone(),
                keep,
            })
        }
        _ => {
            add_assign(acc, b)?;
            relu_forward_in_place(acc)
        }
    }
}

/// dy = dy * [x > 0] in place: dy becomes dx. `mask` is the forward's.
///
/// # Shapes
/// dy: the forward's shape, overwritten with dx.
///
/// # Errors
/// dy's shape differs from the forward's; a byte mask with dy not on the CPU (mixed devices).
pub fn relu_backward_in_place(dy: &mut Tensor, mask: &ReluMask) -> Result<()> {
    const OP: &str = "relu_backward_in_place";
    dy.expect_shape(OP, "dy", mask.shape().dims())?;
    match mask {
        ReluMask::Bytes { keep, .. } => {
            if dy.device() != Device::Cpu {
                return Err(tensor_core::Error::MixedDevices {
                    op: OP,
                    what: "dy",
                    got: dy.device(),
                    expected: Device::Cpu,
                }
                .into());
            }
            cpu::backward_in_place(dy.as_mut_slice()?, keep);
        }
        ReluMask::Input(x) => {
            let upstream = dy.clone();
            relu_backward(dy, &upstream, x)?;
        }
    }
    Ok(())
}

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
    dispatch!(OP, [("y", y), ("x", x)],
        cpu => {
            cpu::forward(y.as_mut_slice()?, x.as_slice()?);
            Ok(())
        },
        cuda |b| => cuda::relu_forward(b, b.buf_mut(OP, y)?, b.buf(OP, x)?),
    )
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
    dispatch!(OP, [("dx", dx), ("dy", dy), ("x", x)],
        cpu => {
            cpu::backward(dx.as_mut_slice()?, dy.as_slice()?, x.as_slice()?);
            Ok(())
        },
        cuda |b| => cuda::relu_backward(b, b.buf_mut(OP, dx)?, b.buf(OP, dy)?, b.buf(OP, x)?),
    )
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

    /// Values on both sides of 0, exactly 0, and NaN, over more than one parallel chunk.
    fn mixed_values(n: usize) -> Tensor {
        let v = (0..n)
            .map(|i| match i % 11 {
                0 => 0.0,
                5 => f32::NAN,
                _ => ((i * 37 % 101) as f32) - 50.0,
            })
            .collect();
        Tensor::from_vec([n], v).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_vec().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn in_place_forward_and_backward_give_the_bits_of_the_out_of_place_ones() {
        let n = 2 * cpu::CHUNK + 29;
        let x = mixed_values(n);
        let dy = Tensor::from_vec([n], (0..n).map(|i| (i as f32 * 0.3).sin()).collect()).unwrap();
        let (mut y, mut dx) = (Tensor::zeros([n]), Tensor::zeros([n]));
        relu_forward(&mut y, &x).unwrap();
        relu_backward(&mut dx, &dy, &x).unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let mut y = x.clone();
                    let mask = relu_forward_in_place(&mut y).unwrap();
                    let mut dx = dy.clone();
                    relu_backward_in_place(&mut dx, &mask).unwrap();
                    (bits(&y), bits(&dx))
                })
        };
        let one = run(1);
        assert_eq!(one, (bits(&y), bits(&dx)));
        assert_eq!(run(2), one);
    }

    #[test]
    fn add_relu_in_place_is_add_then_relu() {
        let n = cpu::CHUNK + 3;
        let a = mixed_values(n);
        let b = Tensor::from_vec([n], (0..n).map(|i| (i % 7) as f32 - 3.0).collect()).unwrap();
        let mut s = Tensor::zeros([n]);
        crate::add::add(&mut s, &a, &b).unwrap();
        let mut want = Tensor::zeros([n]);
        relu_forward(&mut want, &s).unwrap();
        let mut got = a.clone();
        let mask = add_relu_forward_in_place(&mut got, &b).unwrap();
        assert_eq!(bits(&got), bits(&want));
        let mut dx = Tensor::full([n], 2.0);
        relu_backward_in_place(&mut dx, &mask).unwrap();
        let mut want_dx = Tensor::zeros([n]);
        relu_backward(&mut want_dx, &Tensor::full([n], 2.0), &s).unwrap();
        assert_eq!(dx, want_dx);
    }

    #[test]
    fn emu_in_place_relu_matches_cpu() {
        let emu = |t: &Tensor| crate::cuda::to_device(t, Device::CudaEmu).unwrap();
        let n = 301;
        let (a, b) = (mixed_values(n), Tensor::full([n], 0.5));
        let dy = Tensor::from_vec([n], (0..n).map(|i| i as f32).collect()).unwrap();
        for fused_add in [false, true] {
            let (mut y, mut ey) = (a.clone(), emu(&a));
            let (mask, emask) = if fused_add {
                (
                    add_relu_forward_in_place(&mut y, &b).unwrap(),
                    add_relu_forward_in_place(&mut ey, &emu(&b)).unwrap(),
                )
            } else {
                (
                    relu_forward_in_place(&mut y).unwrap(),
                    relu_forward_in_place(&mut ey).unwrap(),
                )
            };
            assert!(matches!(emask, ReluMask::Input(_)));
            assert_eq!(bits(&ey.to_cpu().unwrap()), bits(&y));
            let (mut dx, mut edx) = (dy.clone(), emu(&dy));
            relu_backward_in_place(&mut dx, &mask).unwrap();
            relu_backward_in_place(&mut edx, &emask).unwrap();
            assert_eq!(edx.to_vec(), dx.to_vec());
            let e = relu_backward_in_place(&mut emu(&dy), &mask).unwrap_err();
            assert!(e.to_string().starts_with("relu_backward_in_place"), "{e}");
        }
    }

    #[test]
    fn bad_shapes_name_the_op_and_the_shapes() {
        let mask = relu_forward_in_place(&mut Tensor::zeros([2, 3])).unwrap();
        let e = relu_backward_in_place(&mut Tensor::zeros([6]), &mask).unwrap_err();
        assert_eq!(
            e.to_string(),
            "relu_backward_in_place: dy has shape (6,), expected (2, 3)"
        );
        let e =
            add_relu_forward_in_place(&mut Tensor::zeros([2, 3]), &Tensor::zeros([3])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add_relu_forward_in_place: b has shape (3,), expected (2, 3)"
        );
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

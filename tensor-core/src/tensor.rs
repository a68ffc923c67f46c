use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::{Device, Error, Result, Shape};

/// The memory behind a tensor.
///
/// A tensor owns its buffer outright; there is no sharing and no reference counting, so a
/// `&mut Tensor` is always safe to write through.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// Host memory, row-major.
    Cpu(Vec<f32>),
}

/// A dense, row-major `f32` tensor: a shape and the storage that holds `shape.len()` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    storage: Storage,
}

impl Tensor {
    /// A tensor of zeros on the CPU.
    pub fn zeros(shape: impl Into<Shape>) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor with every value set to `value`, on the CPU.
    pub fn full(shape: impl Into<Shape>, value: f32) -> Tensor {
        let shape = shape.into();
        let storage = Storage::Cpu(vec![value; shape.len()]);
        Tensor { shape, storage }
    }

    /// Wraps `data` (row-major) as a tensor of `shape`.
    ///
    /// # Errors
    /// [`Error::DataLength`] if `data.len()` is not the product of the axes.
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.len() {
            return Err(Error::DataLength {
                op: "Tensor::from_vec",
                expected: shape.len(),
                got: data.len(),
                shape,
            });
        }
        Ok(Tensor {
            shape,
            storage: Storage::Cpu(data),
        })
    }

    /// Values drawn independently from U(lo, hi).
    ///
    /// # Errors
    /// [`Error::Invalid`] unless `lo < hi` and both are finite.
    pub fn uniform<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        lo: f32,
        hi: f32,
        rng: &mut R,
    ) -> Result<Tensor> {
        let dist = Uniform::new(lo, hi).map_err(|e| Error::Invalid {
            op: "Tensor::uniform",
            msg: format!("bounds [{lo}, {hi}): {e}"),
        })?;
        Ok(Tensor::sample(shape.into(), &dist, rng))
    }

    /// Values drawn independently from N(mean, std^2).
    ///
    /// # Errors
    /// [`Error::Invalid`] if `std` is negative or not finite.
    pub fn normal<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        mean: f32,
        std: f32,
        rng: &mut R,
    ) -> Result<Tensor> {
        if !(std >= 0.0 && std.is_finite() && mean.is_finite()) {
            return Err(Error::Invalid {
                op: "Tensor::normal",
                msg: format!("mean {mean}, std {std}: need a finite mean and a finite std >= 0"),
            });
        }
        let dist = Normal::new(mean, std).map_err(|e| Error::Invalid {
            op: "Tensor::normal",
            msg: format!("mean {mean}, std {std}: {e}"),
        })?;
        Ok(Tensor::sample(shape.into(), &dist, rng))
    }

    /// Xavier/Glorot uniform initialisation: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
    /// For a 3x3 convolution from C to K channels, fan_in = 9 C and fan_out = 9 K.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `fan_in + fan_out` is 0.
    pub fn xavier_uniform<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        fan_in: usize,
        fan_out: usize,
        rng: &mut R,
    ) -> Result<Tensor> {
        if fan_in + fan_out == 0 {
            return Err(Error::Invalid {
                op: "Tensor::xavier_uniform",
                msg: "fan_in + fan_out is 0".into(),
            });
        }
        let a = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
        Tensor::uniform(shape, -a, a, rng)
    }

    fn sample<R: Rng + ?Sized, D: Distribution<f32>>(
        shape: Shape,
        dist: &D,
        rng: &mut R,
    ) -> Tensor {
        let data = (0..shape.len()).map(|_| dist.sample(rng)).collect();
        Tensor {
            shape,
            storage: Storage::Cpu(data),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The axes, outermost first.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shape.is_empty()
    }

    /// Where the storage lives.
    pub fn device(&self) -> Device {
        match self.storage {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    /// The storage, for kernels that dispatch on the device.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The storage, mutably, for kernels that dispatch on the device.
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// The same values under another shape with as many elements; never copies.
    ///
    /// # Errors
    /// [`Error::Reshape`] if the element counts differ.
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Tensor> {
        let to = shape.into();
        if to.len() != self.len() {
            return Err(Error::Reshape {
                from_len: self.len(),
                to_len: to.len(),
                from: self.shape,
                to,
            });
        }
        Ok(Tensor {
            shape: to,
            storage: self.storage,
        })
    }

    /// The values of a CPU tensor, row-major.
    ///
    /// # Errors
    /// [`Error::WrongDevice`] if the tensor is not on the CPU.
    pub fn as_slice(&self) -> Result<&[f32]> {
        match &self.storage {
            Storage::Cpu(v) => Ok(v),
        }
    }

    /// The values of a CPU tensor, row-major, mutably.
    ///
    /// # Errors
    /// [`Error::WrongDevice`] if the tensor is not on the CPU.
    pub fn as_mut_slice(&mut self) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::Cpu(v) => Ok(v),
        }
    }

    /// A copy of the values on the host, row-major, whatever the device.
    pub fn to_vec(&self) -> Vec<f32> {
        match &self.storage {
            Storage::Cpu(v) => v.clone(),
        }
    }

    /// An ndarray view of a CPU tensor, for code that reads better with axes.
    ///
    /// # Errors
    /// [`Error::WrongDevice`] if the tensor is not on the CPU.
    pub fn view(&self) -> Result<ArrayViewD<'_, f32>> {
        let dims = IxDyn(self.shape.dims());
        let data = self.as_slice()?;
        Ok(ArrayViewD::from_shape(dims, data).expect("a tensor's storage matches its shape"))
    }

    /// A mutable ndarray view of a CPU tensor.
    ///
    /// # Errors
    /// [`Error::WrongDevice`] if the tensor is not on the CPU.
    pub fn view_mut(&mut self) -> Result<ArrayViewMutD<'_, f32>> {
        let dims = IxDyn(self.shape.dims());
        let data = match &mut self.storage {
            Storage::Cpu(v) => v.as_mut_slice(),
        };
        Ok(ArrayViewMutD::from_shape(dims, data).expect("a tensor's storage matches its shape"))
    }

    /// Sets every value to `value`.
    pub fn fill(&mut self, value: f32) -> Result<()> {
        self.as_mut_slice()?.fill(value);
        Ok(())
    }

    /// Checks that this tensor has exactly the shape `expected`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming `op`, `what` (the argument) and both shapes.
    pub fn expect_shape(
        &self,
        op: &'static str,
        what: &'static str,
        expected: &[usize],
    ) -> Result<()> {
        if self.dims() == expected {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                op,
                what,
                got: self.shape.clone(),
                expected: Shape::new(expected).to_string(),
            })
        }
    }

    /// The four axes of an NCHW tensor.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if the rank is not 4.
    pub fn expect_nchw(
        &self,
        op: &'static str,
        what: &'static str,
    ) -> Result<(usize, usize, usize, usize)> {
        self.shape.nchw().ok_or_else(|| Error::ShapeMismatch {
            op,
            what,
            got: self.shape.clone(),
            expected: "rank 4 (N, C, H, W)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn from_vec_checks_length() {
        assert!(Tensor::from_vec([2, 3], vec![0.0; 6]).is_ok());
        let e = Tensor::from_vec([2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Tensor::from_vec: shape (2, 3) holds 6 values, got 5"
        );
    }

    #[test]
    fn reshape_keeps_the_buffer() {
        let t = Tensor::from_vec([2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        let ptr = t.as_slice().unwrap().as_ptr();
        let r = t.reshape([3, 2]).unwrap();
        assert_eq!(r.as_slice().unwrap().as_ptr(), ptr);
        assert_eq!(r.dims(), &[3, 2]);
        let e = r.reshape([4, 2]).unwrap_err();
        assert!(matches!(
            e,
            Error::Reshape {
                from_len: 6,
                to_len: 8,
                ..
            }
        ));
    }

    #[test]
    fn seeded_init_is_reproducible_and_in_range() {
        let a = Tensor::xavier_uniform([64, 3, 3, 3], 27, 576, &mut ChaCha8Rng::seed_from_u64(7))
            .unwrap();
        let b = Tensor::xavier_uniform([64, 3, 3, 3], 27, 576, &mut ChaCha8Rng::seed_from_u64(7))
            .unwrap();
        assert_eq!(a, b);
        let limit = (6.0f32 / 603.0).sqrt();
        let v = a.as_slice().unwrap();
        assert!(v.iter().all(|x| x.abs() <= limit));
        // The spread covers the range: the largest magnitude is close to the limit.
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.95 * limit);
    }

    #[test]
    fn normal_has_the_asked_moments() {
        let t = Tensor::normal([100_000], 1.0, 2.0, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let v = t.as_slice().unwrap();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
        assert!(Tensor::normal([1], 0.0, -1.0, &mut ChaCha8Rng::seed_from_u64(1)).is_err());
    }

    #[test]
    fn shape_checks_name_the_op() {
        let t = Tensor::zeros([2, 3, 4, 5]);
        assert_eq!(t.expect_nchw("conv2d", "x").unwrap(), (2, 3, 4, 5));
        let e = t
            .expect_shape("conv2d", "weight", &[8, 3, 3, 3])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conv2d: weight has shape (2, 3, 4, 5), expected (8, 3, 3, 3)"
        );
        let v = t.view().unwrap();
        assert_eq!(v.shape(), &[2, 3, 4, 5]);
    }
}

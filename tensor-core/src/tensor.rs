use cudarc::driver::CudaSlice;
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};
use rayon::prelude::*;

use crate::{Device, Error, Result, Shape};

/// The memory behind a tensor.
///
/// A tensor owns its buffer outright; there is no sharing and no reference counting, so a
/// `&mut Tensor` is always safe to write through.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Host memory, row-major.
    Cpu(Vec<f32>),
    /// GPU memory of CUDA device `ordinal`, row-major; allocated on the stream every launch of
    /// that device goes to (`kernels::cuda::gpu::Gpu`), so stream order orders all accesses.
    /// Cloning copies on the device (and panics if the driver fails: use it outside hot paths).
    Cuda { ordinal: usize, buf: CudaSlice<f32> },
    /// The emulated CUDA device's memory (tests): host memory only CUDA launch code touches.
    Emu(Vec<f32>),
}

impl Storage {
    /// The device the storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda { ordinal, .. } => Device::Cuda(*ordinal),
            Storage::Emu(_) => Device::CudaEmu,
        }
    }

    /// How many values the storage holds.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) | Storage::Emu(v) => v.len(),
            Storage::Cuda { buf, .. } => buf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A host copy of the values (a device-to-host copy for GPU storage, which waits for the
    /// launches before it).
    ///
    /// # Errors
    /// [`Error::Device`] if the driver fails.
    pub fn to_host(&self) -> Result<Vec<f32>> {
        match self {
            Storage::Cpu(v) | Storage::Emu(v) => Ok(v.clone()),
            Storage::Cuda { buf, .. } => buf.stream().clone_dtoh(buf).map_err(|e| Error::Device {
                op: "Tensor::to_vec",
                msg: format!("copying {} values from the GPU: {e}", buf.len()),
            }),
        }
    }
}

/// Equal when on the same device with the same values (GPU values are read back to compare;
/// a failed read compares unequal).
impl PartialEq for Storage {
    fn eq(&self, other: &Storage) -> bool {
        match (self, other) {
            (Storage::Cpu(a), Storage::Cpu(b)) | (Storage::Emu(a), Storage::Emu(b)) => a == b,
            (Storage::Cuda { ordinal: i, .. }, Storage::Cuda { ordinal: j, .. }) if i == j => {
                matches!((self.to_host(), other.to_host()), (Ok(a), Ok(b)) if a == b)
            }
            _ => false,
        }
    }
}

/// Below this many values [`host_zeros`] writes its zeros on one thread.
const PARALLEL_ZEROS: usize = 1 << 16;

/// `n` zeros in host memory, written by every rayon thread when `n` is large. Layers allocate
/// their outputs this way ([`Tensor::new_zeros`]) and the kernels then overwrite them: zeroing a
/// block the allocator reuses (`alloc.rs`) on one thread while the other waited was 8% of the
/// tiny preset's CPU step (`perf record`).
fn host_zeros(n: usize) -> Vec<f32> {
    if n < PARALLEL_ZEROS {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(0.0, n));
    v
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

    /// A tensor of zeros of `shape` on this tensor's device (on a GPU, allocated on the stream
    /// this tensor's buffer belongs to): how layers allocate outputs beside their inputs.
    ///
    /// # Errors
    /// [`Error::Device`] if the GPU allocation fails.
    pub fn new_zeros(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let storage = match &self.storage {
            Storage::Cpu(_) => Storage::Cpu(host_zeros(shape.len())),
            Storage::Emu(_) => Storage::Emu(host_zeros(shape.len())),
            Storage::Cuda { ordinal, buf } => Storage::Cuda {
                ordinal: *ordinal,
                buf: buf
                    .stream()
                    .alloc_zeros(shape.len())
                    .map_err(|e| Error::Device {
                        op: "Tensor::new_zeros",
                        msg: format!("allocating {} values on the GPU: {e}", shape.len()),
                    })?,
            },
        };
        Ok(Tensor { shape, storage })
    }

    /// Wraps `storage` (on any device) as a tensor of `shape`.
    ///
    /// # Errors
    /// [`Error::DataLength`] if the storage does not hold `shape.len()` values.
    pub fn from_storage(shape: impl Into<Shape>, storage: Storage) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.len() {
            return Err(Error::DataLength {
                op: "Tensor::from_storage",
                expected: shape.len(),
                got: storage.len(),
                shape,
            });
        }
        Ok(Tensor { shape, storage })
    }

    /// The storage, taken out of the tensor.
    pub fn into_storage(self) -> Storage {
        self.storage
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
        self.storage.device()
    }

    /// The device every one of `tensors` (named for the error) lives on.
    ///
    /// # Errors
    /// [`Error::MixedDevices`] naming `op` and the first tensor not on the first one's device;
    /// [`Error::Invalid`] if `tensors` is empty.
    pub fn common_device(op: &'static str, tensors: &[(&'static str, &Tensor)]) -> Result<Device> {
        let Some((_, first)) = tensors.first() else {
            return Err(Error::Invalid {
                op,
                msg: "no tensors to take the device of".into(),
            });
        };
        let expected = first.device();
        match tensors.iter().find(|(_, t)| t.device() != expected) {
            Some((what, t)) => Err(Error::MixedDevices {
                op,
                what,
                got: t.device(),
                expected,
            }),
            None => Ok(expected),
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
            s => Err(not_on_cpu("Tensor::as_slice", s)),
        }
    }

    /// The values of a CPU tensor, row-major, mutably.
    ///
    /// # Errors
    /// [`Error::WrongDevice`] if the tensor is not on the CPU.
    pub fn as_mut_slice(&mut self) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::Cpu(v) => Ok(v),
            s => Err(not_on_cpu("Tensor::as_mut_slice", s)),
        }
    }

    /// A copy of the values on the host, row-major, whatever the device.
    ///
    /// # Panics
    /// If the GPU driver fails to copy a device tensor back (a broken device, not a bad
    /// argument); [`Tensor::try_to_vec`] returns that as an error.
    pub fn to_vec(&self) -> Vec<f32> {
        self.try_to_vec()
            .unwrap_or_else(|e| panic!("Tensor::to_vec: {e}"))
    }

    /// A copy of the values on the host, row-major, whatever the device.
    ///
    /// # Errors
    /// [`Error::Device`] if the GPU driver fails.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        self.storage.to_host()
    }

    /// A CPU copy of this tensor (a host copy of a device tensor, a clone of a CPU one).
    ///
    /// # Errors
    /// [`Error::Device`] if the GPU driver fails.
    pub fn to_cpu(&self) -> Result<Tensor> {
        Ok(Tensor {
            shape: self.shape.clone(),
            storage: Storage::Cpu(self.try_to_vec()?),
        })
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
        let data = self.as_mut_slice()?;
        Ok(ArrayViewMutD::from_shape(dims, data).expect("a tensor's storage matches its shape"))
    }

    /// Sets every value to `value`, on whatever device the tensor lives.
    ///
    /// # Errors
    /// [`Error::Device`] if the GPU driver fails.
    pub fn fill(&mut self, value: f32) -> Result<()> {
        match &mut self.storage {
            Storage::Cpu(v) | Storage::Emu(v) => v.fill(value),
            Storage::Cuda { buf, .. } => {
                let stream = buf.stream().clone();
                let done = if value.to_bits() == 0 {
                    stream.memset_zeros(buf)
                } else {
                    stream.memcpy_htod(&vec![value; buf.len()], buf)
                };
                done.map_err(|e| Error::Device {
                    op: "Tensor::fill",
                    msg: format!("filling {} values on the GPU: {e}", buf.len()),
                })?;
            }
        }
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

/// The error of a host-only access to device storage.
fn not_on_cpu(op: &'static str, storage: &Storage) -> Error {
    Error::WrongDevice {
        op,
        got: storage.device(),
        expected: Device::Cpu,
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
    fn emulated_device_storage_is_read_back_but_not_sliced() {
        let mut t = Tensor::from_storage([2, 2], Storage::Emu(vec![1.0, 2.0, 3.0, 4.0])).unwrap();
        assert_eq!(t.device(), Device::CudaEmu);
        assert_eq!(t.to_vec(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            t.as_slice().unwrap_err().to_string(),
            "Tensor::as_slice: tensor is on cuda-emu, expected cpu"
        );
        assert!(t.as_mut_slice().is_err() && t.view().is_err() && t.view_mut().is_err());
        t.fill(0.5).unwrap();
        let c = t.to_cpu().unwrap();
        assert_eq!((c.device(), c.to_vec()), (Device::Cpu, vec![0.5; 4]));
        assert_ne!(
            c, t,
            "equal values on different devices are different tensors"
        );
        assert!(Tensor::from_storage([3], Storage::Emu(vec![0.0; 2])).is_err());
        let z = t.new_zeros([3]).unwrap();
        assert_eq!((z.device(), z.to_vec()), (Device::CudaEmu, vec![0.0; 3]));
    }

    #[test]
    fn new_zeros_is_all_zeros_on_both_sides_of_the_parallel_threshold() {
        let cpu = Tensor::zeros([1]);
        for n in [PARALLEL_ZEROS - 1, PARALLEL_ZEROS, 3 * PARALLEL_ZEROS + 5] {
            // Freed blocks of ones first, so a reused block that kept its old values shows.
            drop(Tensor::full([n], 1.0));
            let z = cpu.new_zeros([n]).unwrap();
            assert_eq!(z.len(), n);
            assert!(z.to_vec().iter().all(|&v| v == 0.0), "n = {n}");
        }
    }

    #[test]
    fn common_device_names_the_odd_one_out() {
        let a = Tensor::zeros([2]);
        let b = Tensor::from_storage([2], Storage::Emu(vec![0.0; 2])).unwrap();
        assert_eq!(
            Tensor::common_device("add", &[("a", &a), ("y", &a)]),
            Ok(Device::Cpu)
        );
        let e = Tensor::common_device("add", &[("a", &a), ("b", &b)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "add: b is on cuda-emu, the other tensors on cpu"
        );
        assert!(Tensor::common_device("add", &[]).is_err());
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

//! Tensors on a CUDA device: moving them between devices, allocating them, and reaching the
//! backend buffer inside a tensor so that each op's `mod.rs` can call its launch code (its
//! `cuda.rs`) on the real GPU ([`Gpu`], `Storage::Cuda`) or the emulated one ([`Emu`],
//! `Storage::Emu`) alike, through `dispatch!`.

use tensor_core::{Device, Shape, Storage, Tensor};

use super::emu::Emu;
use super::gpu::Gpu;
use super::launch::Backend;
use crate::{Error, Result};

/// A [`Backend`] whose f32 buffers are what tensors on its device hold.
pub trait TensorBackend: Backend {
    /// The device tensors of this backend live on.
    fn device(&self) -> Device;
    /// Wraps a buffer as a tensor's storage.
    fn storage(&self, buf: Self::Buf<f32>) -> Storage;
    /// The buffer inside `t`.
    ///
    /// # Errors
    /// [`tensor_core::Error::WrongDevice`] naming `op` if `t` is on another device.
    fn buf<'a>(&self, op: &'static str, t: &'a Tensor) -> Result<&'a Self::Buf<f32>>;
    /// The buffer inside `t`, mutably.
    ///
    /// # Errors
    /// [`tensor_core::Error::WrongDevice`] naming `op` if `t` is on another device.
    fn buf_mut<'a>(&self, op: &'static str, t: &'a mut Tensor) -> Result<&'a mut Self::Buf<f32>>;

    /// A tensor of zeros of `shape` on this device.
    fn zeros(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let buf = self.alloc::<f32>(shape.len())?;
        Ok(Tensor::from_storage(shape, self.storage(buf))?)
    }

    /// A copy of `host` (row-major) as a tensor of `shape` on this device.
    fn upload_tensor(&self, shape: impl Into<Shape>, host: &[f32]) -> Result<Tensor> {
        let buf = self.upload(host)?;
        Ok(Tensor::from_storage(shape, self.storage(buf))?)
    }
}

fn wrong_device(op: &'static str, t: &Tensor, expected: Device) -> Error {
    tensor_core::Error::WrongDevice {
        op,
        got: t.device(),
        expected,
    }
    .into()
}

impl TensorBackend for Gpu {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal())
    }

    fn storage(&self, buf: Self::Buf<f32>) -> Storage {
        Storage::Cuda {
            ordinal: self.ordinal(),
            buf,
        }
    }

    fn buf<'a>(&self, op: &'static str, t: &'a Tensor) -> Result<&'a Self::Buf<f32>> {
        match t.storage() {
            Storage::Cuda { ordinal, buf } if *ordinal == self.ordinal() => Ok(buf),
            _ => Err(wrong_device(op, t, self.device())),
        }
    }

    fn buf_mut<'a>(&self, op: &'static str, t: &'a mut Tensor) -> Result<&'a mut Self::Buf<f32>> {
        let expected = self.device();
        if t.device() != expected {
            return Err(wrong_device(op, t, expected));
        }
        match t.storage_mut() {
            Storage::Cuda { buf, .. } => Ok(buf),
            _ => unreachable!("the device was checked above"),
        }
    }
}

impl TensorBackend for Emu {
    fn device(&self) -> Device {
        Device::CudaEmu
    }

    fn storage(&self, buf: Self::Buf<f32>) -> Storage {
        Storage::Emu(buf)
    }

    fn buf<'a>(&self, op: &'static str, t: &'a Tensor) -> Result<&'a Self::Buf<f32>> {
        match t.storage() {
            Storage::Emu(buf) => Ok(buf),
            _ => Err(wrong_device(op, t, Device::CudaEmu)),
        }
    }

    fn buf_mut<'a>(&self, op: &'static str, t: &'a mut Tensor) -> Result<&'a mut Self::Buf<f32>> {
        if t.device() != Device::CudaEmu {
            return Err(wrong_device(op, t, Device::CudaEmu));
        }
        match t.storage_mut() {
            Storage::Emu(buf) => Ok(buf),
            _ => unreachable!("the device was checked above"),
        }
    }
}

/// Runs `$body` with `$b` bound to the backend of CUDA device `$device` (the shared [`Gpu`] of
/// its ordinal, or [`Emu`]); the body is compiled once per backend. `$device` must not be
/// [`Device::Cpu`]: that is an [`Error::Invalid`] naming `$op`.
macro_rules! on_cuda {
    ($op:expr, $device:expr, |$b:ident| $body:expr) => {
        match $device {
            tensor_core::Device::Cuda(ordinal) => {
                let $b = $crate::cuda::gpu::Gpu::shared(ordinal)?;
                $body
            }
            tensor_core::Device::CudaEmu => {
                let $b = &$crate::cuda::emu::Emu;
                $body
            }
            tensor_core::Device::Cpu => Err($crate::Error::Invalid {
                op: $op,
                msg: "the CUDA launch code was asked to run on the CPU".into(),
            }),
        }
    };
}
pub(crate) use on_cuda;

/// Runs an op on its device, the one way every op's `mod.rs` does: `$cpu` on the CPU (the op's
/// `cpu.rs`), `$cuda` with `$b` bound to the backend of a CUDA device, real or emulated
/// ([`on_cuda!`]; the op's `cuda.rs`). Both arms evaluate to the op's `Result`. The device is that
/// of the `(name, tensor)` pairs in `[...]` (tensors on different devices are an error naming
/// `$op` and the odd one, as [`Tensor::common_device`](tensor_core::Tensor::common_device)
/// says), or `device = $device`.
macro_rules! dispatch {
    ($op:expr, [$($t:expr),+ $(,)?], cpu => $cpu:expr, cuda |$b:ident| => $cuda:expr $(,)?) => {
        $crate::cuda::tensor::dispatch!(
            $op,
            device = tensor_core::Tensor::common_device($op, &[$($t),+])?,
            cpu => $cpu,
            cuda |$b| => $cuda
        )
    };
    ($op:expr, device = $device:expr, cpu => $cpu:expr, cuda |$b:ident| => $cuda:expr $(,)?) => {
        match $device {
            tensor_core::Device::Cpu => $cpu,
            device => $crate::cuda::tensor::on_cuda!($op, device, |$b| $cuda),
        }
    };
}
pub(crate) use dispatch;

/// A tensor of zeros of `shape` on `device`.
///
/// # Errors
/// [`Error::Device`] if the GPU cannot be opened or the allocation fails.
pub fn zeros_on(shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
    let shape = shape.into();
    match device {
        Device::Cpu => Ok(Tensor::zeros(shape)),
        d => on_cuda!("zeros_on", d, |b| b.zeros(shape)),
    }
}

/// Waits until every launch queued on `device` has finished (nothing to wait for on the CPU or
/// the emulated device, whose launches finish before they return). A timer of device work calls
/// it before reading the clock.
///
/// # Errors
/// [`Error::Device`] if the GPU cannot be opened or a launch before failed.
pub fn synchronize(device: Device) -> Result<()> {
    match device {
        Device::Cuda(ordinal) => Gpu::shared(ordinal)?.synchronize(),
        Device::Cpu | Device::CudaEmu => Ok(()),
    }
}

/// A copy of `t` on `device` (a clone when it is already there): host to device, device to
/// host, or through the host between two devices.
///
/// # Errors
/// [`Error::Device`] if the GPU cannot be opened or a copy fails.
pub fn to_device(t: &Tensor, device: Device) -> Result<Tensor> {
    if t.device() == device {
        return Ok(t.clone());
    }
    let host = t.try_to_vec()?;
    match device {
        Device::Cpu => Ok(Tensor::from_vec(t.shape().clone(), host)?),
        d => on_cuda!("to_device", d, |b| b
            .upload_tensor(t.shape().clone(), &host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emu_tensors_round_trip_and_refuse_the_wrong_device() {
        let x = Tensor::from_vec([2, 3], (0..6).map(|i| i as f32 - 2.5).collect()).unwrap();
        let d = to_device(&x, Device::CudaEmu).unwrap();
        assert_eq!((d.device(), d.dims()), (Device::CudaEmu, &[2, 3][..]));
        assert_eq!(d.to_vec(), x.to_vec());
        assert_eq!(to_device(&d, Device::Cpu).unwrap(), x);
        let z = zeros_on([4], Device::CudaEmu).unwrap();
        assert_eq!((z.device(), z.to_vec()), (Device::CudaEmu, vec![0.0; 4]));
        let e = Emu.buf("relu_forward", &x).unwrap_err();
        assert_eq!(
            e.to_string(),
            "relu_forward: tensor is on cpu, expected cuda-emu"
        );
    }

    #[test]
    fn a_missing_gpu_is_an_error_not_a_panic() {
        // With a driver and a GPU 0 this copies; on a machine without one it must say so.
        let x = Tensor::zeros([3]);
        match to_device(&x, Device::Cuda(0)) {
            Ok(g) => assert_eq!(g.to_vec(), vec![0.0; 3]),
            Err(e) => assert!(matches!(e, Error::Device { .. }), "{e}"),
        }
        assert!(matches!(
            zeros_on([3], Device::Cuda(4096)),
            Err(Error::Device { .. })
        ));
    }
}

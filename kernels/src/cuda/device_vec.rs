//! Buffers of other element types than f32 (max-pool indices, DropBlock masks) kept where a
//! tensor's values live, so that what a forward records for its backward never travels through
//! the host on a GPU.
//!
//! [`DeviceVec`] mirrors `tensor_core::Storage` for any [`Elem`]; [`DeviceVecBackend`] wraps a
//! backend's buffer into one and finds it again inside, as [`TensorBackend`] does for tensors.

use cudarc::driver::CudaSlice;
use tensor_core::Device;

use super::emu::Emu;
use super::gpu::Gpu;
use super::launch::{Backend, Elem};
use super::tensor::TensorBackend;
use crate::Result;

/// `len` values of `T` on a device: host memory, a CUDA GPU's memory, or the emulated device's.
///
/// Only the CPU variant is built from host values by callers; the device variants come out of
/// the op that filled them ([`DeviceVecBackend::wrap`]) and are read by the op that consumes them.
/// Cloning copies on the device (and panics if the driver fails, as a tensor's clone does).
#[derive(Debug, Clone)]
pub enum DeviceVec<T: Elem> {
    /// Host memory.
    Cpu(Vec<T>),
    /// GPU memory of CUDA device `ordinal`, allocated on the stream every launch goes to.
    Cuda { ordinal: usize, buf: CudaSlice<T> },
    /// The emulated CUDA device's memory (tests).
    Emu(Vec<T>),
}

impl<T: Elem> DeviceVec<T> {
    /// The device the values live on.
    pub fn device(&self) -> Device {
        match self {
            DeviceVec::Cpu(_) => Device::Cpu,
            DeviceVec::Cuda { ordinal, .. } => Device::Cuda(*ordinal),
            DeviceVec::Emu(_) => Device::CudaEmu,
        }
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        match self {
            DeviceVec::Cpu(v) | DeviceVec::Emu(v) => v.len(),
            DeviceVec::Cuda { buf, .. } => buf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values when they are in host memory ([`Device::Cpu`]), else `None`.
    pub fn as_host(&self) -> Option<&[T]> {
        match self {
            DeviceVec::Cpu(v) => Some(v),
            _ => None,
        }
    }

    /// A host copy of the values (for a GPU, a device-to-host copy that waits for the launches
    /// before it: for tests and inspection, not for a training step).
    ///
    /// # Errors
    /// [`crate::Error::Device`] if the GPU cannot be opened or the copy fails.
    pub fn to_host(&self) -> Result<Vec<T>> {
        match self {
            DeviceVec::Cpu(v) | DeviceVec::Emu(v) => Ok(v.clone()),
            DeviceVec::Cuda { ordinal, buf } => Gpu::shared(*ordinal)?.download(buf),
        }
    }
}

/// Equal when on the same device with the same values (GPU values are read back to compare; a
/// failed read compares unequal), as tensors compare.
impl<T: Elem + PartialEq> PartialEq for DeviceVec<T> {
    fn eq(&self, other: &DeviceVec<T>) -> bool {
        match (self, other) {
            (DeviceVec::Cpu(a), DeviceVec::Cpu(b)) | (DeviceVec::Emu(a), DeviceVec::Emu(b)) => {
                a == b
            }
            (DeviceVec::Cuda { ordinal: i, .. }, DeviceVec::Cuda { ordinal: j, .. }) if i == j => {
                matches!((self.to_host(), other.to_host()), (Ok(a), Ok(b)) if a == b)
            }
            _ => false,
        }
    }
}

/// A [`TensorBackend`] whose buffers of any [`Elem`] a [`DeviceVec`] can hold.
pub trait DeviceVecBackend: TensorBackend {
    /// Wraps a buffer of this backend.
    fn wrap<T: Elem>(&self, buf: Self::Buf<T>) -> DeviceVec<T>;
    /// The buffer inside `v`.
    ///
    /// # Errors
    /// [`tensor_core::Error::MixedDevices`] naming `op` and `what` if `v` is on another device.
    fn vec_buf<'a, T: Elem>(
        &self,
        op: &'static str,
        what: &'static str,
        v: &'a DeviceVec<T>,
    ) -> Result<&'a Self::Buf<T>>;
}

fn mixed<T: Elem>(
    op: &'static str,
    what: &'static str,
    v: &DeviceVec<T>,
    expected: Device,
) -> crate::Error {
    tensor_core::Error::MixedDevices {
        op,
        what,
        got: v.device(),
        expected,
    }
    .into()
}

impl DeviceVecBackend for Gpu {
    fn wrap<T: Elem>(&self, buf: CudaSlice<T>) -> DeviceVec<T> {
        DeviceVec::Cuda {
            ordinal: self.ordinal(),
            buf,
        }
    }

    fn vec_buf<'a, T: Elem>(
        &self,
        op: &'static str,
        what: &'static str,
        v: &'a DeviceVec<T>,
    ) -> Result<&'a CudaSlice<T>> {
        match v {
            DeviceVec::Cuda { ordinal, buf } if *ordinal == self.ordinal() => Ok(buf),
            _ => Err(mixed(op, what, v, self.device())),
        }
    }
}

impl DeviceVecBackend for Emu {
    fn wrap<T: Elem>(&self, buf: Vec<T>) -> DeviceVec<T> {
        DeviceVec::Emu(buf)
    }

    fn vec_buf<'a, T: Elem>(
        &self,
        op: &'static str,
        what: &'static str,
        v: &'a DeviceVec<T>,
    ) -> Result<&'a Vec<T>> {
        match v {
            DeviceVec::Emu(buf) => Ok(buf),
            _ => Err(mixed(op, what, v, Device::CudaEmu)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emu_vectors_wrap_read_back_and_refuse_the_wrong_device() {
        let v = Emu.wrap(Emu.upload(&[3u32, 1, 4]).unwrap());
        assert_eq!((v.device(), v.len()), (Device::CudaEmu, 3));
        assert_eq!(v.to_host().unwrap(), vec![3, 1, 4]);
        assert_eq!(v.as_host(), None);
        assert_eq!(Emu.vec_buf("test", "v", &v).unwrap(), &vec![3, 1, 4]);
        let host = DeviceVec::Cpu(vec![3u32, 1, 4]);
        assert_ne!(host, v, "same values on another device");
        assert_eq!(host.as_host(), Some(&[3, 1, 4][..]));
        let e = Emu
            .vec_buf("maxpool2d_backward", "argmax", &host)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "maxpool2d_backward: argmax is on cpu, the other tensors on cuda-emu"
        );
    }
}

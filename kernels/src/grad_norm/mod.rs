//! The global gradient norm and clipping by it, as TensorFlow's `tf.clip_by_global_norm`.
//!
//! Over all gradient tensors g_1 .. g_P of a model:
//!   global_norm = sqrt(sum_i sum_of_squares(g_i))
//!   scale       = max_norm / max(global_norm, max_norm)
//!   g_i        *= scale        (for every i; nothing changes when global_norm <= max_norm)
//!
//! A caller holding the gradients one at a time (a `Parameters` visitor, say) does it in two
//! passes, in the same fixed parameter order each step so the f64 sum is reproducible:
//! ```
//! # use kernels::grad_norm::*;
//! # use tensor_core::Tensor;
//! # let mut grads = vec![Tensor::full([3], 30.0), Tensor::full([2, 2], 40.0)];
//! let sums: Vec<f64> = grads.iter().map(sum_of_squares).collect::<Result<_, _>>()?;
//! let norm = global_norm(&sums);
//! let scale = clip_factor(norm, 100.0)?;
//! if scale < 1.0 {
//!     for g in &mut grads {
//!         scale_in_place(g, scale)?;
//!     }
//! }
//! # assert!((norm - (3.0f64 * 900.0 + 4.0 * 1600.0).sqrt()).abs() < 1e-9);
//! # Ok::<(), kernels::Error>(())
//! ```
//! On a CUDA device each [`sum_of_squares`] waits for the device to read its value back. A
//! caller with many tensors gathers their sums in a [`SquareSums`] instead, one slot per tensor
//! on the tensors' device, and reads them all at once: one wait, however many tensors.
//! [`clip_by_global_norm`] does that for gradients gathered in a slice.
//!
//! # Shapes
//! Every tensor: any shape.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
#[cfg(test)]
mod tests;

use tensor_core::{Device, Tensor};

use crate::cuda::emu::Emu;
use crate::cuda::gpu::Gpu;
use crate::cuda::{dispatch, Backend, TensorBackend};

use crate::{Error, Result};

/// sum(x^2), accumulated in f64 over fixed chunks, each summed serially and the chunk sums added
/// in order: the same bits for any thread count.
///
/// # Errors
/// A device error if `x` is not readable on the CPU.
pub fn sum_of_squares(x: &Tensor) -> Result<f64> {
    const OP: &str = "sum_of_squares";
    dispatch!(OP, device = x.device(),
        cpu => Ok(cpu::sum_of_squares(x.as_slice()?)),
        cuda |b| => cuda::sum_of_squares(b, b.buf(OP, x)?),
    )
}

/// sqrt of the sum of per-tensor sums of squares, added in the order given.
pub fn global_norm(sums_of_squares: &[f64]) -> f64 {
    sums_of_squares.iter().sum::<f64>().sqrt()
}

/// The factor that clips to `max_norm`: max_norm / max(global_norm, max_norm), exactly 1 when
/// the norm is within the bound.
///
/// # Errors
/// [`Error::Invalid`] if `max_norm` is not finite and > 0, or `global_norm` is NaN or infinite
/// (a diverged step: scaling would turn every gradient into NaN).
pub fn clip_factor(global_norm: f64, max_norm: f32) -> Result<f32> {
    const OP: &str = "clip_by_global_norm";
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::Invalid {
            op: OP,
            msg: format!("max norm {max_norm} is not finite and > 0"),
        });
    }
    if !global_norm.is_finite() {
        return Err(Error::Invalid {
            op: OP,
            msg: format!("the global gradient norm is {global_norm}"),
        });
    }
    if global_norm <= max_norm as f64 {
        Ok(1.0)
    } else {
        Ok((max_norm as f64 / global_norm) as f32)
    }
}

/// x *= s, in place.
///
/// # Errors
/// A device error if `x` is not writable on the CPU.
pub fn scale_in_place(x: &mut Tensor, s: f32) -> Result<()> {
    const OP: &str = "scale_in_place";
    dispatch!(OP, device = x.device(),
        cpu => {
            cpu::scale(x.as_mut_slice()?, s);
            Ok(())
        },
        cuda |b| => cuda::scale_in_place(b, b.buf_mut(OP, x)?, s),
    )
}

/// Sums of squares of several tensors, one slot each, kept on the tensors' device until
/// [`SquareSums::read`] copies them all to the host at once. Each slot holds exactly what
/// [`sum_of_squares`] returns for its tensor (on the CPU the very same bits); a slot never set
/// reads 0.
pub struct SquareSums {
    slots: Slots,
}

/// Where the sums live: on a CUDA device, with the scratch buffer of the first pass.
enum Slots {
    Host(Vec<f64>),
    Cuda {
        gpu: &'static Gpu,
        sums: DeviceSums<Gpu>,
    },
    Emu(DeviceSums<Emu>),
}

/// sums: (slots) and partial: the scratch of [`cuda::sum_of_squares_into`], reused by each slot
/// (launches run in order, so one pass is done with it before the next starts).
struct DeviceSums<B: Backend> {
    sums: B::Buf<f64>,
    partial: B::Buf<f64>,
}

impl<B: Backend> DeviceSums<B> {
    fn new(b: &B, len: usize) -> Result<DeviceSums<B>> {
        Ok(DeviceSums {
            sums: b.alloc(len)?,
            partial: b.alloc(cuda::SUM_OF_SQUARES_BLOCKS as usize)?,
        })
    }

    fn set(&mut self, b: &B, slot: usize, x: &B::Buf<f32>) -> Result<()> {
        cuda::sum_of_squares_into(b, &mut self.sums, slot, &mut self.partial, x)
    }
}

impl SquareSums {
    /// `len` slots of 0 on `device`.
    ///
    /// # Errors
    /// [`Error::Device`] if the GPU cannot be opened or the buffers not allocated.
    pub fn new(device: Device, len: usize) -> Result<SquareSums> {
        let slots = match device {
            Device::Cpu => Slots::Host(vec![0.0; len]),
            Device::Cuda(ordinal) => {
                let gpu = Gpu::shared(ordinal)?;
                Slots::Cuda {
                    gpu,
                    sums: DeviceSums::new(gpu, len)?,
                }
            }
            Device::CudaEmu => Slots::Emu(DeviceSums::new(&Emu, len)?),
        };
        Ok(SquareSums { slots })
    }

    /// The device the sums live on.
    pub fn device(&self) -> Device {
        match &self.slots {
            Slots::Host(_) => Device::Cpu,
            Slots::Cuda { gpu, .. } => Device::Cuda(gpu.ordinal()),
            Slots::Emu(_) => Device::CudaEmu,
        }
    }

    /// The number of slots.
    pub fn len(&self) -> usize {
        match &self.slots {
            Slots::Host(v) => v.len(),
            Slots::Cuda { gpu, sums } => gpu.len(&sums.sums),
            Slots::Emu(sums) => Emu.len(&sums.sums),
        }
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// slots[slot] = [`sum_of_squares`] of `x`, without a host read on a device.
    ///
    /// # Errors
    /// [`Error::Shape`] if `slot` >= [`SquareSums::len`]; [`tensor_core::Error::WrongDevice`] if
    /// `x` is on another device than the sums.
    pub fn set(&mut self, slot: usize, x: &Tensor) -> Result<()> {
        const OP: &str = "SquareSums::set";
        let len = self.len();
        if slot >= len {
            return Err(Error::Shape {
                op: OP,
                msg: format!("slot {slot} of {len}"),
            });
        }
        let device = self.device();
        if x.device() != device {
            return Err(tensor_core::Error::WrongDevice {
                op: OP,
                got: x.device(),
                expected: device,
            }
            .into());
        }
        match &mut self.slots {
            Slots::Host(v) => v[slot] = cpu::sum_of_squares(x.as_slice()?),
            Slots::Cuda { gpu, sums } => sums.set(*gpu, slot, gpu.buf(OP, x)?)?,
            Slots::Emu(sums) => sums.set(&Emu, slot, Emu.buf(OP, x)?)?,
        }
        Ok(())
    }

    /// Every slot, read to the host in one copy (on a GPU this waits for the launches before it).
    ///
    /// # Errors
    /// [`Error::Device`] if the copy fails.
    pub fn read(&self) -> Result<Vec<f64>> {
        match &self.slots {
            Slots::Host(v) => Ok(v.clone()),
            Slots::Cuda { gpu, sums } => gpu.download(&sums.sums),
            Slots::Emu(sums) => Emu.download(&sums.sums),
        }
    }
}

impl std::fmt::Debug for SquareSums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SquareSums of {} tensors on {}",
            self.len(),
            self.device()
        )
    }
}

/// Clips `grads` in place by their global norm and returns that norm (before clipping). The
/// sums of squares gather in one [`SquareSums`] on the gradients' device: one host read.
///
/// # Errors
/// As [`clip_factor`]; [`tensor_core::Error::WrongDevice`] if the gradients are not all on one
/// device. Nothing is scaled when it fails.
pub fn clip_by_global_norm(grads: &mut [&mut Tensor], max_norm: f32) -> Result<f64> {
    let device = grads.first().map_or(Device::Cpu, |g| g.device());
    let mut sums = SquareSums::new(device, grads.len())?;
    for (slot, g) in grads.iter().enumerate() {
        sums.set(slot, g)?;
    }
    let norm = global_norm(&sums.read()?);
    let scale = clip_factor(norm, max_norm)?;
    if scale < 1.0 {
        for g in grads.iter_mut() {
            scale_in_place(g, scale)?;
        }
    }
    Ok(norm)
}

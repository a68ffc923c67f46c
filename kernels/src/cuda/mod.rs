//! The CUDA backend's foundation: kernel sources, parameter structs, launch configurations and
//! the launch code of every op, over a [`Backend`] that is either the real GPU ([`gpu::Gpu`],
//! cudarc with dynamic loading and NVRTC at run time) or, in tests, an emulated device that runs
//! the same `.cu` sources compiled as host C++ (see `kernels/cuda-emu/cuda_emu.h`).
//!
//! The kernel sources live beside each op's CPU version (`src/<op>/<op>.cu`); the shared Philox
//! generator in `src/philox/philox.cuh` draws the CPU's masks bit for bit. Tensors on a CUDA
//! device hold a backend's buffer; [`tensor`] moves them between devices and lets each op's
//! `mod.rs` run the launch code on whichever backend its tensors live on.

pub mod device_vec;
pub mod emu;
pub mod gpu;
pub mod launch;
#[cfg(test)]
pub(crate) mod parity;
pub mod source;
pub mod tensor;
#[cfg(test)]
mod tests;

pub use device_vec::{DeviceVec, DeviceVecBackend};
pub(crate) use launch::kernel;
pub use launch::{Backend, Elem, Kernel, KernelParams, LaunchConfig};
pub(crate) use tensor::dispatch;
pub use tensor::{synchronize, to_device, zeros_on, TensorBackend};

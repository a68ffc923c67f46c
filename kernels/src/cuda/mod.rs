//! The CUDA backend, which knows no op: a [`Backend`] is either the real GPU ([`gpu::Gpu`],
//! cudarc with dynamic loading and NVRTC at run time) or an emulated device ([`emu::Emu`]) that
//! runs the same `.cu` sources compiled as host C++ (see `kernels/cuda-emu/cuda_emu.h`), for
//! tests on machines without a GPU.
//!
//! Each op's kernels and their launch code live in the op's folder (`src/<op>/<op>.cu` and
//! `cuda.rs`), built from what is here:
//! - [`source`]: a [`source::Module`] (one `.cu` file) and its `#include` expansion, the shared
//!   headers `common.cuh`, `tiled_gemm.cuh` (the FP32 tiled product), `mma.cuh` (the tensor-core
//!   instructions: mma.sync, ldmatrix, cp.async, TF32 and BF16 rounding) and `tc_gemm.cuh` (the
//!   tensor-core tiled product), and [`source::define`], which reads a constant the C defines so
//!   that Rust does not write it again;
//! - [`launch`]: [`Kernel`] (made by `kernel!`: its module, name and emulated entry point),
//!   parameter structs (`params!`, with their layout, checked against the C), [`LaunchConfig`],
//!   [`launch::Elementwise`] (the one shape of the elementwise launches) and the buffer checks;
//! - [`gpu`] and [`emu`]: the two backends; a launch compiles (GPU) or calls (emulator) the
//!   kernel's own module, so neither needs a list of the ops;
//! - [`tensor`] and [`device_vec`]: tensors and other buffers on a CUDA device, moving them
//!   between devices, and `dispatch!`, the way each op's `mod.rs` runs its CPU or CUDA code;
//! - `parity` (tests): the CPU-versus-CUDA comparison and the kernels that test the harness.

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

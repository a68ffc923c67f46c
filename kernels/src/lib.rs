//! Every op's arithmetic, once per device.
//!
//! Each op lives in its own folder, `src/<op>/`, with its code for every device:
//! - `mod.rs`: the public functions on tensors, which check shapes and dispatch on the tensors'
//!   device (`cuda::dispatch!`), and the op's formulas in its doc;
//! - `cpu.rs`: all CPU arithmetic, the rayon version, which is also the reference the other
//!   devices are tested against;
//! - `<op>.cu`: the CUDA C kernels, compiled at run time by NVRTC (and as host C++ for the
//!   emulated device);
//! - `cuda.rs`: the launch code of those kernels on device buffers, written once for the GPU and
//!   the emulated device: the `#[repr(C)]` twins of the kernels' parameter structs, the thread
//!   counts, the `Kernel` constants and the `MODULE` (the `.cu` source, embedded);
//! - its tests: `tests.rs` (or a `tests` module in `mod.rs`: known values, gradients, the same
//!   bits on one thread and two) and `cuda_tests.rs` (the CUDA kernels against `cpu.rs`, `emu_*`
//!   on the emulated device, `gpu_*` on a GPU).
//!
//! [`cuda`] is the backend those build on and imports no op: the GPU driver and the emulator,
//! the launch machinery, device buffers inside tensors, the shared headers. [`modules`] lists
//! every op's `MODULE` for the NVRTC compile check. `philox` is the mask generator the dropout
//! and DropBlock kernels share (`philox.cuh`); `precision` the TF32 and BF16 formats of the
//! tensor-core kernels (`gemm::tc`, `conv2d::tc`), rounded on the CPU as the GPU rounds them.
//!
//! Conventions:
//! - Public functions take [`Tensor`](tensor_core::Tensor)s, check every shape, and return
//!   [`Result`]; outputs are passed in as `&mut Tensor` and overwritten (or accumulated into,
//!   where the doc says so), so the caller can reuse buffers across steps.
//! - CPU code parallelises over independent outputs only; every reduction that feeds one output
//!   runs serially in a fixed order, so results are bit-identical for any thread count.
//!
//! Shape legend: N batch, C channels in, K channels out, H W spatial size in, OH OW spatial size
//! out, F features, M N K in GEMM docs are the usual matrix dimensions.

pub mod adam;
pub mod add;
pub mod batchnorm;
pub mod conv2d;
pub mod cuda;
pub mod dropblock;
pub mod dropout;
mod error;
pub mod gemm;
pub mod grad_norm;
pub mod maxpool;
pub mod modules;
pub mod philox;
pub mod precision;
pub mod relu;
pub mod sgd;
pub mod simd;
pub mod softmax_ce;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};

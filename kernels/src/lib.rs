//! Every op's arithmetic, once per device.
//!
//! Each op lives in its own folder, `src/<op>/`: `mod.rs` checks shapes and dispatches on the
//! tensors' device, `cpu.rs` holds the rayon version, which is also the reference the other
//! devices are tested against.
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
pub mod relu;
pub mod sgd;
pub mod softmax_ce;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};

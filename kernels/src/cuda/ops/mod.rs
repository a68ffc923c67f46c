//! The launch code of every op: argument checks, parameter structs and launch configurations,
//! written once against [`Backend`] and shared by the GPU and the emulated device.
//!
//! Each function mirrors the CPU function of the same name (same arithmetic, same masks) on
//! device buffers; outputs are overwritten unless the doc says accumulated.
//!
//! The elementwise, loss, pooling and optimiser ops are here; batch norm, GEMM and convolution
//! have a file each.

mod batchnorm;
mod conv2d;
mod gemm;

pub use batchnorm::*;
pub use conv2d::*;
pub use gemm::*;

// Until every op's launch code has moved into its folder (each exports a MODULE).
#[allow(ambiguous_glob_reexports)]
pub use crate::{
    adam::cuda::*, add::cuda::*, dropblock::cuda::*, dropout::cuda::*, grad_norm::cuda::*,
    maxpool::cuda::*, relu::cuda::*, sgd::cuda::*, softmax_ce::cuda::*,
};

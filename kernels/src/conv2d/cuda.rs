//! conv2d on a CUDA device: the launch code of conv2d.cu.

use crate::cuda::source::Module;

/// conv2d.cu.
pub const MODULE: Module = Module {
    name: "conv2d",
    path: "conv2d/conv2d.cu",
    source: include_str!("conv2d.cu"),
    headers: &[],
};

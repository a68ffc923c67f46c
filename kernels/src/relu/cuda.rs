//! relu on a CUDA device: the launch code of relu.cu.

use crate::cuda::source::Module;

/// relu.cu.
pub const MODULE: Module = Module {
    name: "relu",
    path: "relu/relu.cu",
    source: include_str!("relu.cu"),
    headers: &[],
};

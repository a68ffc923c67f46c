//! dropblock on a CUDA device: the launch code of dropblock.cu.

use crate::cuda::source::Module;

/// dropblock.cu.
pub const MODULE: Module = Module {
    name: "dropblock",
    path: "dropblock/dropblock.cu",
    source: include_str!("dropblock.cu"),
    headers: &[crate::philox::cuda::HEADER],
};

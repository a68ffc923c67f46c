//! dropout on a CUDA device: the launch code of dropout.cu.

use crate::cuda::source::Module;

/// dropout.cu.
pub const MODULE: Module = Module {
    name: "dropout",
    path: "dropout/dropout.cu",
    source: include_str!("dropout.cu"),
    headers: &[crate::philox::cuda::HEADER],
};

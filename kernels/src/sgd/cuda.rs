//! sgd on a CUDA device: the launch code of sgd.cu.

use crate::cuda::source::Module;

/// sgd.cu.
pub const MODULE: Module = Module {
    name: "sgd",
    path: "sgd/sgd.cu",
    source: include_str!("sgd.cu"),
    headers: &[],
};

//! adam on a CUDA device: the launch code of adam.cu.

use crate::cuda::source::Module;

/// adam.cu.
pub const MODULE: Module = Module {
    name: "adam",
    path: "adam/adam.cu",
    source: include_str!("adam.cu"),
    headers: &[],
};

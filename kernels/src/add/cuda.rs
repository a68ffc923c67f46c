//! add on a CUDA device: the launch code of add.cu.

use crate::cuda::source::Module;

/// add.cu.
pub const MODULE: Module = Module {
    name: "add",
    path: "add/add.cu",
    source: include_str!("add.cu"),
    headers: &[],
};

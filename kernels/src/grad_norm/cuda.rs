//! grad_norm on a CUDA device: the launch code of grad_norm.cu.

use crate::cuda::source::Module;

/// grad_norm.cu.
pub const MODULE: Module = Module {
    name: "grad_norm",
    path: "grad_norm/grad_norm.cu",
    source: include_str!("grad_norm.cu"),
    headers: &[],
};

//! maxpool on a CUDA device: the launch code of maxpool.cu.

use crate::cuda::source::Module;

/// maxpool.cu.
pub const MODULE: Module = Module {
    name: "maxpool",
    path: "maxpool/maxpool.cu",
    source: include_str!("maxpool.cu"),
    headers: &[],
};

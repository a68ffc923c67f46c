//! softmax_ce on a CUDA device: the launch code of softmax_ce.cu.

use crate::cuda::source::Module;

/// softmax_ce.cu.
pub const MODULE: Module = Module {
    name: "softmax_ce",
    path: "softmax_ce/softmax_ce.cu",
    source: include_str!("softmax_ce.cu"),
    headers: &[],
};

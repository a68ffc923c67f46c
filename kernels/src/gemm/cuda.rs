//! gemm on a CUDA device: the launch code of gemm.cu.

use crate::cuda::source::Module;

/// gemm.cu.
pub const MODULE: Module = Module {
    name: "gemm",
    path: "gemm/gemm.cu",
    source: include_str!("gemm.cu"),
    headers: &[],
};

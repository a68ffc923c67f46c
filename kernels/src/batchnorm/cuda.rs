//! batchnorm on a CUDA device: the launch code of batchnorm.cu.

use crate::cuda::source::Module;

/// batchnorm.cu.
pub const MODULE: Module = Module {
    name: "batchnorm",
    path: "batchnorm/batchnorm.cu",
    source: include_str!("batchnorm.cu"),
    headers: &[],
};

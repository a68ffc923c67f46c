//! The Philox generator on a CUDA device: philox.cuh, which the mask kernels include.

use crate::cuda::source::Header;

/// philox.cuh: `mask_uniform`, the device twin of [`super::MaskKey::uniform`].
pub const HEADER: Header = Header {
    name: "philox.cuh",
    source: include_str!("philox.cuh"),
};

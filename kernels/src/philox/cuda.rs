//! The Philox generator on a CUDA device: philox.cuh, which the mask kernels include.

use super::MaskKey;
use crate::cuda::launch::params;
use crate::cuda::source::Header;

/// philox.cuh: `mask_uniform`, the device twin of [`super::MaskKey::uniform`].
pub const HEADER: Header = Header {
    name: "philox.cuh",
    source: include_str!("philox.cuh"),
};

params! {
    /// `MaskKey` in philox.cuh: [`MaskKey`] split into 32-bit words.
    pub struct MaskKeyC as MaskKey {
        pub seed_lo: u32,
        pub seed_hi: u32,
        pub step_lo: u32,
        pub step_hi: u32,
        pub layer: u32,
    }
}

impl From<MaskKey> for MaskKeyC {
    fn from(k: MaskKey) -> MaskKeyC {
        MaskKeyC {
            seed_lo: k.seed as u32,
            seed_hi: (k.seed >> 32) as u32,
            step_lo: k.step as u32,
            step_hi: (k.step >> 32) as u32,
            layer: k.layer,
        }
    }
}

//! The `#[repr(C)]` twins of the kernels' C parameter structs, field by field and in order.
//! Device addresses are `u64` (a C pointer is 8 bytes on every target we build for). The
//! emulated device checks each struct's size against the C compiler's at every launch.

use super::launch::params;

params! {
    /// gemm.cu `SgemmParams`: op(a): (m, k), op(b): (k, n) -> c: (m, n).
    pub struct SgemmParams {
        pub c: u64,
        pub a: u64,
        pub b: u64,
        pub alpha: f32,
        pub beta: f32,
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub trans_a: u32,
        pub trans_b: u32,
    }

    /// conv2d.cu `ConvGeom`: every size of one convolution ([`crate::conv2d::Conv2dDims`]).
    pub struct ConvGeomC {
        pub n: u32,
        pub c: u32,
        pub h: u32,
        pub w: u32,
        pub k: u32,
        pub kh: u32,
        pub kw: u32,
        pub oh: u32,
        pub ow: u32,
        pub stride: u32,
        pub pad: u32,
    }

    /// conv2d.cu `Conv2dParams`: x: (n, c, h, w), weight: (k, c, kh, kw), dy: (n, k, oh, ow);
    /// out is y, dx or dweight (or the split partials) by kernel.
    pub struct Conv2dParams {
        pub out: u64,
        pub x: u64,
        pub weight: u64,
        pub dy: u64,
        pub g: ConvGeomC,
        pub k_per_split: u32,
    }

    /// conv2d.cu `SumSplitsParams`: partial: (splits, n) -> out: (n), accumulated.
    pub struct SumSplitsParams {
        pub out: u64,
        pub partial: u64,
        pub n: u32,
        pub splits: u32,
    }

    /// batchnorm.cu `BatchNormGeom`: x: (n, c, inner); each channel's M = n * inner values j
    /// split into `chunks` runs of `chunk_len` (a multiple of 4; the last may be shorter); `vec4`
    /// is 1 when inner % 4 == 0 and the value arrays are 16-byte aligned.
    pub struct BatchNormGeom {
        pub n: u32,
        pub c: u32,
        pub inner: u32,
        pub chunks: u32,
        pub chunk_len: u32,
        pub vec4: u32,
    }

    /// batchnorm.cu `BatchNormMomentsParams`: x: (n, c, inner) -> partial: (c, chunks, 2), f64.
    pub struct BatchNormMomentsParams {
        pub partial: u64,
        pub x: u64,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormStatsParams`: partial: (c, chunks, 2), x: (n, c, inner) -> mean,
    /// inv_std: (c); running_mean, running_var: (c), updated in training.
    pub struct BatchNormStatsParams {
        pub mean: u64,
        pub inv_std: u64,
        pub running_mean: u64,
        pub running_var: u64,
        pub partial: u64,
        pub x: u64,
        pub eps: f32,
        pub momentum: f32,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormNormalizeParams`: x: (n, c, inner) -> y: same; mean, inv_std,
    /// gamma, beta: (c).
    pub struct BatchNormNormalizeParams {
        pub y: u64,
        pub x: u64,
        pub mean: u64,
        pub inv_std: u64,
        pub gamma: u64,
        pub beta: u64,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormGradSumsParams`: dy, x: (n, c, inner), mean: (c) ->
    /// partial: (c, chunks, 2), f64.
    pub struct BatchNormGradSumsParams {
        pub partial: u64,
        pub dy: u64,
        pub x: u64,
        pub mean: u64,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormGradFinishParams`: partial: (c, chunks, 2), inv_std: (c) ->
    /// dgamma, dbeta: (c), accumulated; coef: (c, 2).
    pub struct BatchNormGradFinishParams {
        pub dgamma: u64,
        pub dbeta: u64,
        pub coef: u64,
        pub partial: u64,
        pub inv_std: u64,
        pub batch_stats: u32,
        pub g: BatchNormGeom,
    }

    /// batchnorm.cu `BatchNormInputGradParams`: dy, x: (n, c, inner) -> dx: same; gamma, mean,
    /// inv_std: (c); coef: (c, 2).
    pub struct BatchNormInputGradParams {
        pub dx: u64,
        pub dy: u64,
        pub x: u64,
        pub gamma: u64,
        pub mean: u64,
        pub inv_std: u64,
        pub coef: u64,
        pub g: BatchNormGeom,
    }
}

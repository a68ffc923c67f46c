//! Layers: each a `forward` that returns its output and a cache, and a `backward` that consumes
//! that cache, side by side in one file.
//!
//! Conventions, for every layer of this crate:
//! - `forward(x, mode) -> (y, cache)`: the cache holds exactly what `backward` needs. Layers
//!   that draw random masks, and the composites ([`ResidualBlock`], [`FcStage`]), take a
//!   [`ForwardCtx`] instead of the bare [`Mode`]: the mode plus the seed and step that key the
//!   masks.
//! - `backward(&mut self, dy, cache) -> dx`: parameter gradients are *accumulated* (`+=`) into each
//!   [`Param::grad`]; the input gradient `dx` is a fresh tensor (overwritten, never accumulated).
//! - Randomness (dropout, DropBlock) comes from an explicit
//!   [`MaskKey`](kernels::philox::MaskKey) ([`ForwardCtx::mask_key`]); initialisation takes an
//!   explicit seeded RNG.
//! - The arithmetic itself lives in `kernels`; a layer owns parameters, caches and the order of
//!   calls.
//! - Each layer's forward and backward formulas are written once, in the guided walk through one
//!   training step of the seed network (`docs/walkthrough.md` in the repository), in one notation
//!   (`weight` and `bias` as PyTorch names them); each layer's doc comment names its section.
//! - [`gradcheck`]: the finite-difference check every layer's tests run through
//!   ([`gradcheck::Probe`]).
//!
//! Shape legend: N batch, C channels in, K channels out, H W spatial size in, OH OW spatial size
//! out, F features in, O features out.

mod batchnorm;
mod block;
mod conv2d;
mod device;
mod dropblock;
mod dropout;
mod error;
mod fc_stage;
mod forward_ctx;
pub mod gradcheck;
mod linear;
mod loss;
mod maxpool;
mod param;
pub mod profile;
mod relu;

pub use batchnorm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNormCache};
pub use block::{ConvBlock, ConvBlockCache, ResidualBlock, ResidualBlockCache};
pub use conv2d::{Conv2d, Conv2dCache, Conv2dGeom};
pub use device::{into_device, move_tensor, params_to_device};
pub use dropblock::{DropBlock, DropBlockCache};
pub use dropout::{Dropout, DropoutCache};
pub use error::{Error, Result};
pub use fc_stage::{FcStage, FcStageCache};
pub use forward_ctx::ForwardCtx;
pub use linear::{Linear, LinearCache};
pub use loss::{SoftmaxCeCache, SoftmaxCrossEntropy};
pub use maxpool::{MaxPool2d, MaxPoolCache};
pub use param::{join, Param, Parameters};
pub use relu::{ReLU, ReluCache};

/// Whether a layer runs as in training (batch statistics, random masks), in evaluation, or to
/// recompute batch norm's running statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
    /// Precise batch norm: each batch norm normalises with the batch's statistics and folds them
    /// into an equal-weight average of the batches before it, `averaged` of them:
    /// running = (averaged * running + batch) / (averaged + 1). Passes with averaged = 0, 1, ...,
    /// n - 1 leave the mean of the n batches' statistics (the variance of the layer's kind,
    /// [`kernels::batchnorm::RunningVariance`]). Dropout and DropBlock pass their input through,
    /// as in evaluation, so the statistics are those of the network evaluation runs.
    RecomputeStats {
        averaged: u32,
    },
}

impl Mode {
    /// Whether random layers (dropout, DropBlock) draw masks: in training only.
    pub fn draws_masks(self) -> bool {
        self == Mode::Train
    }
}

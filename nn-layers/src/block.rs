//! The seed's two composite blocks, built from the layers of this crate.
//!
//! ```text
//! conv_block(x; C -> K)     = conv2(relu(bn2(conv1(relu(bn1(x))))))     3x3 convs, SAME, no bias
//! residual_block(x; C -> K) : h1 = relu(conv_block1(x))
//!                             h2 = conv_block2(h1)
//!                             y  = maxpool(dropblock(relu(h1 + h2)))   3x3 stride 2 SAME pool
//! ```
//!
//! Backward runs the same calls in reverse. The only step that is not a single layer's backward is
//! the skip connection: h1 feeds both `conv_block2` and the sum, so its gradient is the sum of
//! both paths (`docs/walkthrough.md`, "Residual sum", in its section 3).
//!
//! The conv blocks' batch norms fold the *unbiased* batch variance into their running variance,
//! as the seed's TensorFlow layers did for 4-D inputs (SPEC "Layer details"; the fully-connected
//! stages take the biased one).

use kernels::batchnorm::{BatchNormConfig, RunningVariance};
use kernels::relu::add_relu_forward_in_place;
use rand::Rng;
use tensor_core::{Device, Tensor};

use crate::profile::{self, LayerKind, Pass};
use crate::{
    join, BatchNorm2d, BatchNormCache, Conv2d, Conv2dCache, Conv2dGeom, DropBlock, DropBlockCache,
    ForwardCtx, MaxPool2d, MaxPoolCache, Mode, Param, Parameters, ReLU, ReluCache, Result,
};

/// BN -> ReLU -> conv3x3 (C -> K) -> BN -> ReLU -> conv3x3 (K -> K).
/// x: (N, C, H, W) -> y: (N, K, H, W).
///
/// Parameter names follow the equivalent PyTorch module: `bn1`, `conv1`, `bn2`, `conv2`.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    pub bn1: BatchNorm2d,
    pub conv1: Conv2d,
    pub bn2: BatchNorm2d,
    pub conv2: Conv2d,
}

/// What [`ConvBlock::backward`] needs: each layer's cache, in forward order.
#[derive(Debug)]
pub struct ConvBlockCache {
    bn1: BatchNormCache,
    relu1: ReluCache,
    conv1: Conv2dCache,
    bn2: BatchNormCache,
    relu2: ReluCache,
    conv2: Conv2dCache,
}

impl ConvBlock {
    /// A block from `in_channels` (C) to `out_channels` (K), its batch norms with the eps and
    /// momentum of `bn` (and the unbiased running variance, whatever `bn` says: module doc), its
    /// convolutions Xavier-initialised from `rng` (conv1 first).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        bn: BatchNormConfig,
        rng: &mut impl Rng,
    ) -> Result<ConvBlock> {
        let same = Conv2dGeom::SAME_3X3;
        let bn = BatchNormConfig {
            running_variance: RunningVariance::Unbiased,
            ..bn
        };
        Ok(ConvBlock {
            bn1: BatchNorm2d::with_config(in_channels, bn)?,
            conv1: Conv2d::new(in_channels, out_channels, 3, same, rng)?,
            bn2: BatchNorm2d::with_config(out_channels, bn)?,
            conv2: Conv2d::new(out_channels, out_channels, 3, same, rng)?,
        })
    }

    /// x: (N, C, H, W) -> y: (N, K, H, W). In [`Mode::Train`] (and [`Mode::RecomputeStats`]) the
    /// batch norms use and update batch statistics.
    pub fn forward(&mut self, x: Tensor, mode: Mode) -> Result<(Tensor, ConvBlockCache)> {
        // On the CPU each convolution's input relu(bn(.)) is recomputed in the backward from the
        // batch norm's cache instead of being kept: one activation map less per convolution
        // (about 190 MiB of the seed's peak at batch 64) for one normalisation and ReLU more.
        let recompute = x.device() == Device::Cpu;
        let keep = |cache: Conv2dCache| {
            if recompute {
                cache.forget_input()
            } else {
                cache
            }
        };
        // Each batch norm and its ReLU in one pass (BatchNorm::forward_relu).
        let (a, bn1, relu1) = self.bn1.forward_relu(x, mode)?;
        let (a, conv1) = self.conv1.forward(a, mode)?;
        let conv1 = keep(conv1);
        let (a, bn2, relu2) = self.bn2.forward_relu(a, mode)?;
        let (y, conv2) = self.conv2.forward(a, mode)?;
        let conv2 = keep(conv2);
        let cache = ConvBlockCache {
            bn1,
            relu1,
            conv1,
            bn2,
            relu2,
            conv2,
        };
        Ok((y, cache))
    }

    /// dy: (N, K, H, W) -> dx: (N, C, H, W). Accumulates every parameter's gradient.
    pub fn backward(&mut self, dy: &Tensor, cache: ConvBlockCache) -> Result<Tensor> {
        let d = conv_backward(&mut self.conv2, dy, cache.conv2, &self.bn2, &cache.bn2)?;
        // Each ReLU's backward within its batch norm's (BatchNorm::backward_relu).
        let d = self.bn2.backward_relu(d, cache.relu2, cache.bn2)?;
        let d = conv_backward(&mut self.conv1, &d, cache.conv1, &self.bn1, &cache.bn1)?;
        self.bn1.backward_relu(d, cache.relu1, cache.bn1)
    }
}

/// A convolution's backward whose input was relu(bn(.)): from its cache, or, if the forward
/// forgot it, recomputed from the batch norm's cache (bit for bit the forward's values).
fn conv_backward(
    conv: &mut Conv2d,
    dy: &Tensor,
    cache: Conv2dCache,
    bn: &BatchNorm2d,
    bn_cache: &BatchNormCache,
) -> Result<Tensor> {
    if cache.keeps_input() {
        return conv.backward(dy, cache);
    }
    let a = bn.recompute_relu_output(bn_cache)?;
    conv.backward_with_input(dy, &a, cache)
}

impl Parameters for ConvBlock {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        self.bn1.visit_params(&join(prefix, "bn1"), f);
        self.conv1.visit_params(&join(prefix, "conv1"), f);
        self.bn2.visit_params(&join(prefix, "bn2"), f);
        self.conv2.visit_params(&join(prefix, "conv2"), f);
    }

    fn visit_buffers(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn1.visit_buffers(&join(prefix, "bn1"), f);
        self.bn2.visit_buffers(&join(prefix, "bn2"), f);
    }
}

/// The seed's residual block: two conv blocks with a skip connection, then DropBlock and a
/// 3x3 stride-2 SAME max-pool. x: (N, C, H, W) -> y: (N, K, ceil(H/2), ceil(W/2)).
///
/// Parameter names: `conv_block1.*`, `conv_block2.*` (see [`ConvBlock`]).
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    pub conv_block1: ConvBlock,
    pub conv_block2: ConvBlock,
    /// Its `keep_prob` is the trainer's to change each epoch.
    pub drop_block: DropBlock,
    pub pool: MaxPool2d,
}

/// What [`ResidualBlock::backward`] needs.
#[derive(Debug)]
pub struct ResidualBlockCache {
    conv_block1: ConvBlockCache,
    relu1: ReluCache,
    conv_block2: ConvBlockCache,
    relu2: ReluCache,
    drop_block: DropBlockCache,
    pool: MaxPoolCache,
}

impl ResidualBlock {
    /// A block from C to K channels, batch norms configured by `bn`, with DropBlock of
    /// `block_size` at `keep_prob`, drawing its masks from Philox stream `stream` (unique per
    /// random layer of a model).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        bn: BatchNormConfig,
        block_size: usize,
        keep_prob: f32,
        stream: u32,
        rng: &mut impl Rng,
    ) -> Result<ResidualBlock> {
        Ok(ResidualBlock {
            conv_block1: ConvBlock::new(in_channels, out_channels, bn, rng)?,
            conv_block2: ConvBlock::new(out_channels, out_channels, bn, rng)?,
            drop_block: DropBlock::new(block_size, keep_prob, stream)?,
            pool: MaxPool2d::k3_s2_same(),
        })
    }

    /// x: (N, C, H, W) -> y: (N, K, ceil(H/2), ceil(W/2)). The context's seed and step key the
    /// DropBlock mask (only drawn in [`Mode::Train`]).
    pub fn forward(&mut self, x: Tensor, ctx: ForwardCtx) -> Result<(Tensor, ResidualBlockCache)> {
        let mode = ctx.mode;
        let (a, conv_block1) = self.conv_block1.forward(x, mode)?;
        let (h1, relu1) = ReLU.forward(a, mode)?;
        // h1 is both the input of conv_block2 and one side of the sum.
        let (mut s, conv_block2) = self.conv_block2.forward(h1.clone(), mode)?;
        // s = relu(h2 + h1) in one pass, in h2's buffer.
        let relu2 = {
            let _timer = profile::timed(LayerKind::Relu, Pass::Forward);
            ReluCache::from_mask(add_relu_forward_in_place(&mut s, &h1)?)
        };
        let (s, drop_block) = self.drop_block.forward(s, ctx)?;
        let (y, pool) = self.pool.forward(s, mode)?;
        let cache = ResidualBlockCache {
            conv_block1,
            relu1,
            conv_block2,
            relu2,
            drop_block,
            pool,
        };
        Ok((y, cache))
    }

    /// dy: (N, K, OH, OW) -> dx: (N, C, H, W). Accumulates every parameter's gradient.
    pub fn backward(&mut self, dy: &Tensor, cache: ResidualBlockCache) -> Result<Tensor> {
        let d = self.pool.backward(dy, cache.pool)?;
        let d = self.drop_block.backward_owned(d, cache.drop_block)?;
        // ds: the gradient of s = h1 + h2, which reaches h1 directly and through conv_block2.
        let ds = ReLU.backward_owned(d, cache.relu2)?;
        let mut dh1 = self.conv_block2.backward(&ds, cache.conv_block2)?;
        kernels::add::add_assign(&mut dh1, &ds)?;
        let da = ReLU.backward_owned(dh1, cache.relu1)?;
        self.conv_block1.backward(&da, cache.conv_block1)
    }
}

impl Parameters for ResidualBlock {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        self.conv_block1
            .visit_params(&join(prefix, "conv_block1"), f);
        self.conv_block2
            .visit_params(&join(prefix, "conv_block2"), f);
    }

    fn visit_buffers(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.conv_block1
            .visit_buffers(&join(prefix, "conv_block1"), f);
        self.conv_block2
            .visit_buffers(&join(prefix, "conv_block2"), f);
    }
}

#[cfg(test)]
mod tests;

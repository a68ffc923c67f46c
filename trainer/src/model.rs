//! The seed's residual network, built from `nn-layers`, forward and backward by hand.
//!
//! ```text
//! x (N, 3, 32, 32)
//!   -> blocks.0: residual_block(3 -> w1)    (N, w1, 16, 16)
//!   -> blocks.1: residual_block(w1 -> w2)   (N, w2, 8, 8)
//!   -> blocks.2: residual_block(w2 -> w3)   (N, w3, 4, 4)
//!   -> blocks.3: residual_block(w3 -> w4)   (N, w4, 2, 2)
//!   -> flatten in (C, H, W) order           (N, 4 w4)
//!   -> fc1: linear -> bn -> relu -> dropout (N, hidden)
//!   -> fc2: linear -> bn -> relu -> dropout (N, hidden)
//!   -> fc3: linear -> bn                    (N, classes) = logits
//! ```
//!
//! The blocks and stages are `nn-layers`' ([`ResidualBlock`], [`FcStage`]); this module owns their
//! order, the flattening between them, and the one forward walk that training, evaluation and
//! the search for a non-finite stage ([`ResNet::first_non_finite_stage`]) all take.
//!
//! Parameter names are those of the equivalent PyTorch module (`blocks.0.conv_block1.conv1.weight`,
//! `fc1.weight`, `fc1.bn.running_mean`, ...), so checkpoints read naturally elsewhere.

use kernels::batchnorm::BatchNormConfig;
use kernels::conv2d::Conv2dAlgo;
use kernels::precision::Precision;
use nn_layers::{
    join, FcStage, FcStageCache, ForwardCtx, Param, Parameters, ResidualBlock, ResidualBlockCache,
};
use rand::Rng;
use tensor_core::{Device, Tensor};

/// Side of the square input images.
pub const IMAGE_SIDE: usize = 32;
/// Colour channels of the input images.
pub const IMAGE_CHANNELS: usize = 3;

/// Everything that fixes the network's shape and its regularisers.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSpec {
    /// Channel widths of the four residual blocks (the seed: 128, 256, 512, 1024).
    pub widths: [usize; 4],
    /// Features of the two hidden fully-connected layers (the seed: 4096).
    pub hidden: usize,
    /// Number of classes (100 for CIFAR-100, 10 for CIFAR-10).
    pub classes: usize,
    /// DropBlock's block size (the seed: 5).
    pub block_size: usize,
    /// DropBlock's keep probability at the start; the trainer lowers it each epoch.
    pub block_keep: f32,
    /// Keep probability of the dropout after fc1 and fc2 (the seed: 0.5).
    pub fc_keep: f32,
    pub bn: BatchNormConfig,
}

impl NetSpec {
    /// The name and shape of each convolution and linear weight of the network (all its
    /// parameters but the batch-norm vectors), worked out without building it: what a
    /// checkpoint's tensors are checked against before a network of its settings is allocated.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let mut cin = IMAGE_CHANNELS;
        for (i, &w) in self.widths.iter().enumerate() {
            for (block, conv, from) in [(1, 1, cin), (1, 2, w), (2, 1, w), (2, 2, w)] {
                let name = format!("blocks.{i}.conv_block{block}.conv{conv}.weight");
                out.push((name, vec![w, from, 3, 3]));
            }
            cin = w;
        }
        let flat = cin * ResNet::final_side() * ResNet::final_side();
        let (hidden, classes) = (self.hidden, self.classes);
        for (i, out_features, in_features) in
            [(1, hidden, flat), (2, hidden, hidden), (3, classes, hidden)]
        {
            out.push((format!("fc{i}.weight"), vec![out_features, in_features]));
        }
        out
    }
}

/// The whole network.
#[derive(Debug, Clone)]
pub struct ResNet {
    pub spec: NetSpec,
    pub blocks: Vec<ResidualBlock>,
    pub fc1: FcStage,
    pub fc2: FcStage,
    pub fc3: FcStage,
}

/// What [`ResNet::backward`] needs.
#[derive(Debug)]
pub struct ResNetCache {
    blocks: Vec<ResidualBlockCache>,
    /// (N, w4, 2, 2): the shape before flattening.
    flat_from: Vec<usize>,
    fc1: FcStageCache,
    fc2: FcStageCache,
    fc3: FcStageCache,
}

/// Philox streams of the random layers: DropBlock of block i is stream i, the dropouts 4 and 5.
const FC1_DROPOUT_STREAM: u32 = 4;
const FC2_DROPOUT_STREAM: u32 = 5;

impl ResNet {
    /// A freshly initialised network; convolutions and linear layers are Xavier-uniform from
    /// `rng`, in forward order.
    pub fn new(spec: &NetSpec, rng: &mut impl Rng) -> nn_layers::Result<ResNet> {
        let mut blocks = Vec::with_capacity(4);
        let mut cin = IMAGE_CHANNELS;
        for (i, &w) in spec.widths.iter().enumerate() {
            blocks.push(ResidualBlock::new(
                cin,
                w,
                spec.bn,
                spec.block_size,
                spec.block_keep,
                i as u32,
                rng,
            )?);
            cin = w;
        }
        let flat = spec.widths[3] * Self::final_side() * Self::final_side();
        let (bn, keep) = (spec.bn, spec.fc_keep);
        let fc1 = FcStage::hidden(flat, spec.hidden, bn, keep, FC1_DROPOUT_STREAM, rng)?;
        let fc2 = FcStage::hidden(spec.hidden, spec.hidden, bn, keep, FC2_DROPOUT_STREAM, rng)?;
        let fc3 = FcStage::output(spec.hidden, spec.classes, bn, rng)?;
        Ok(ResNet {
            spec: spec.clone(),
            blocks,
            fc1,
            fc2,
            fc3,
        })
    }

    /// Side of the last block's output map: 32 halved (rounding up) four times.
    pub const fn final_side() -> usize {
        let mut s = IMAGE_SIDE;
        let mut i = 0;
        while i < 4 {
            s = s.div_ceil(2);
            i += 1;
        }
        s
    }

    /// Pins every convolution to `algo` (`None`: each pass by `Conv2dAlgo::choose`). A pinned
    /// algorithm that cannot compute a convolution makes its forward fail with an error saying so.
    pub fn pin_conv_algo(&mut self, algo: Option<Conv2dAlgo>) {
        for b in &mut self.blocks {
            for cb in [&mut b.conv_block1, &mut b.conv_block2] {
                cb.conv1.algo = algo;
                cb.conv2.algo = algo;
            }
        }
    }

    /// Runs every convolution and fully-connected product in `precision` (the FP32 kernels, or
    /// tensor cores with TF32 or BF16 operands; weights and everything else stay FP32).
    pub fn set_precision(&mut self, precision: Precision) {
        for b in &mut self.blocks {
            for cb in [&mut b.conv_block1, &mut b.conv_block2] {
                cb.conv1.precision = precision;
                cb.conv2.precision = precision;
            }
        }
        for fc in [&mut self.fc1, &mut self.fc2, &mut self.fc3] {
            fc.linear.precision = precision;
        }
    }

    /// Sets the DropBlock keep probability of every block (the trainer lowers it each epoch).
    pub fn set_block_keep(&mut self, keep: f32) {
        for b in &mut self.blocks {
            b.drop_block.keep_prob = keep;
        }
        self.spec.block_keep = keep;
    }

    /// x: (N, 3, 32, 32) -> logits: (N, classes). The context's mode says training or
    /// evaluation, its seed and step key the random masks (only drawn in training); with its
    /// `check_finite` on, the walk stops at the first stage (`input`, `blocks.0` .. `blocks.3`,
    /// `fc1`, `fc2`, `fc3`) whose output holds a NaN or an infinity, with
    /// [`nn_layers::Error::NonFinite`] naming it.
    pub fn forward(
        &mut self,
        x: Tensor,
        ctx: ForwardCtx,
    ) -> nn_layers::Result<(Tensor, ResNetCache)> {
        ctx.check(&x, || "input".into())?;
        let mut h = x;
        let mut caches = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let (y, c) = block.forward(h, ctx)?;
            ctx.check(&y, || format!("blocks.{i}"))?;
            caches.push(c);
            h = y;
        }
        let flat_from = h.dims().to_vec();
        let n = flat_from[0];
        let features = h.len() / n.max(1);
        let h = h.reshape([n, features])?;
        let (h, fc1) = self.fc1.forward(h, ctx)?;
        ctx.check(&h, || "fc1".into())?;
        let (h, fc2) = self.fc2.forward(h, ctx)?;
        ctx.check(&h, || "fc2".into())?;
        let (logits, fc3) = self.fc3.forward(h, ctx)?;
        ctx.check(&logits, || "fc3".into())?;
        let cache = ResNetCache {
            blocks: caches,
            flat_from,
            fc1,
            fc2,
            fc3,
        };
        Ok((logits, cache))
    }

    /// dlogits: (N, classes) -> dx: (N, 3, 32, 32). Accumulates every parameter's gradient.
    pub fn backward(&mut self, dlogits: &Tensor, cache: ResNetCache) -> nn_layers::Result<Tensor> {
        let d = self.fc3.backward(dlogits, cache.fc3)?;
        let d = self.fc2.backward(&d, cache.fc2)?;
        let d = self.fc1.backward(&d, cache.fc1)?;
        let mut d = d.reshape(cache.flat_from)?;
        for (block, c) in self.blocks.iter_mut().zip(cache.blocks).rev() {
            d = block.backward(&d, c)?;
        }
        Ok(d)
    }

    /// The device the parameters live on (the CPU for a model without parameters).
    pub fn device(&mut self) -> Device {
        let mut device = None;
        self.visit_params("", &mut |_, p| {
            device.get_or_insert(p.value.device());
        });
        device.unwrap_or(Device::Cpu)
    }

    /// Moves every parameter, gradient and buffer to `device`; inputs must then be there too.
    ///
    /// # Errors
    /// The GPU cannot be opened or a copy fails.
    pub fn to_device(&mut self, device: Device) -> nn_layers::Result<()> {
        nn_layers::params_to_device(self, device)
    }

    /// Runs the forward pass checking each stage and names the first stage (`input`, `blocks.0`
    /// .. `blocks.3`, `fc1`, `fc2`, `fc3`) whose output holds a NaN or an infinity: where a
    /// diverged run first went wrong. `None` if every output is finite.
    pub fn first_non_finite_stage(
        &mut self,
        x: Tensor,
        ctx: ForwardCtx,
    ) -> nn_layers::Result<Option<String>> {
        match self.forward(x, ctx.checking_finite()) {
            Ok(_) => Ok(None),
            Err(nn_layers::Error::NonFinite { stage }) => Ok(Some(stage)),
            Err(e) => Err(e),
        }
    }

    /// Number of learnable values.
    pub fn param_count(&mut self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, p| n += p.value.len());
        n
    }

    /// Floating-point operations of one image's forward pass, counted from the network (a
    /// multiply-add is 2): the convolutions and the linear layers. A training step (forward, and a
    /// backward that costs two products per forward product) is about three times this.
    pub fn forward_flops_per_image(&self) -> u64 {
        let mut flops = 0u64;
        let mut side = IMAGE_SIDE as u64;
        let mut cin = IMAGE_CHANNELS as u64;
        for &w in &self.spec.widths {
            let w = w as u64;
            let pixels = side * side;
            // conv1 (cin -> w) and conv2 (w -> w) of conv_block1, then two (w -> w) in conv_block2.
            flops += 2 * 9 * pixels * (cin * w + 3 * w * w);
            side = side.div_ceil(2);
            cin = w;
        }
        let flat = cin * side * side;
        let (h, c) = (self.spec.hidden as u64, self.spec.classes as u64);
        flops + 2 * (flat * h + h * h + h * c)
    }
}

impl Parameters for ResNet {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_params(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.fc1.visit_params(&join(prefix, "fc1"), f);
        self.fc2.visit_params(&join(prefix, "fc2"), f);
        self.fc3.visit_params(&join(prefix, "fc3"), f);
    }

    fn visit_buffers(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_buffers(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.fc1.visit_buffers(&join(prefix, "fc1"), f);
        self.fc2.visit_buffers(&join(prefix, "fc2"), f);
        self.fc3.visit_buffers(&join(prefix, "fc3"), f);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    pub(crate) fn spec(widths: [usize; 4], hidden: usize) -> NetSpec {
        NetSpec {
            widths,
            hidden,
            classes: 100,
            block_size: 5,
            block_keep: 0.9,
            fc_keep: 0.5,
            bn: BatchNormConfig::default(),
        }
    }

    #[test]
    fn the_seed_network_has_the_published_size() {
        let seed = spec([128, 256, 512, 1024], 4096);
        let mut net = ResNet::new(&seed, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        // TensorFlow counts 77,791,822 trainable values for the seed's network.
        assert_eq!(net.param_count(), 77_791_822);
        // About 2.04 GMAC per image in the convolutions (SPEC), plus 4096 * (4096 + 4096 + 100)
        // = 33.9 million in the fully-connected layers.
        let gmac = net.forward_flops_per_image() as f64 / 2e9;
        let fc_gmac = 4096.0 * (4096.0 + 4096.0 + 100.0) / 1e9;
        assert!((gmac - fc_gmac - 2.04).abs() < 0.005, "{gmac} GMAC");
    }

    #[test]
    fn forward_and_backward_shapes_and_names() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut net = ResNet::new(&spec([4, 4, 8, 8], 16), &mut rng).unwrap();
        let x = Tensor::uniform([3, 3, 32, 32], -1.0, 1.0, &mut rng).unwrap();
        let (logits, cache) = net.forward(x, ForwardCtx::train(1, 0)).unwrap();
        assert_eq!(logits.dims(), &[3, 100]);
        let dlogits = Tensor::uniform([3, 100], -1.0, 1.0, &mut rng).unwrap();
        let dx = net.backward(&dlogits, cache).unwrap();
        assert_eq!(dx.dims(), &[3, 3, 32, 32]);

        let mut names = Vec::new();
        net.visit_params("", &mut |n, _| names.push(n.to_string()));
        net.visit_buffers("", &mut |n, _| names.push(n.to_string()));
        for expected in [
            "blocks.0.conv_block1.bn1.weight",
            "blocks.0.conv_block1.conv1.weight",
            "blocks.3.conv_block2.conv2.weight",
            "fc1.weight",
            "fc1.bn.weight",
            "fc3.bn.bias",
            "fc2.bn.running_mean",
            "blocks.2.conv_block2.bn2.running_var",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        let mut shapes = Vec::new();
        net.visit_params("", &mut |n, p| {
            shapes.push((n.to_string(), p.value.dims().to_vec()))
        });
        assert!(shapes.contains(&("fc1.weight".into(), vec![16, 32])));
        assert!(shapes.contains(&("blocks.0.conv_block1.conv1.weight".into(), vec![4, 3, 3, 3])));
        // The weights' shapes worked out from the spec are the built network's.
        let weights: Vec<_> = shapes
            .into_iter()
            .filter(|(n, s)| n.ends_with(".weight") && s.len() > 1)
            .collect();
        let mut expected = net.spec.weight_shapes();
        expected.sort();
        let mut got = weights;
        got.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn the_first_non_finite_stage_is_named() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut net = ResNet::new(&spec([4, 4, 8, 8], 16), &mut rng).unwrap();
        let x = Tensor::uniform([2, 3, 32, 32], -1.0, 1.0, &mut rng).unwrap();
        let stage =
            |net: &mut ResNet| net.first_non_finite_stage(x.clone(), ForwardCtx::train(1, 0));
        assert_eq!(stage(&mut net).unwrap(), None);
        net.fc2.linear.weight.value.as_mut_slice().unwrap()[3] = f32::INFINITY;
        assert_eq!(stage(&mut net).unwrap().as_deref(), Some("fc2"));
        net.blocks[2]
            .conv_block1
            .conv1
            .weight
            .value
            .as_mut_slice()
            .unwrap()[0] = f32::NAN;
        assert_eq!(stage(&mut net).unwrap().as_deref(), Some("blocks.2"));
    }
}

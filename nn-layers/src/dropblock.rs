//! DropBlock, after each residual block.

use kernels::dropblock::{dropblock_apply_in_place, dropblock_mask, DropBlockMask};
use tensor_core::{Shape, Tensor};

use crate::profile::{self, LayerKind, Pass};
use crate::{Error, ForwardCtx, Result};

/// DropBlock with block size b = `block_size` and keep probability k = `keep_prob`, in training
/// only (the identity in evaluation, at k = 1, and on a map smaller than the block): squares of
/// b x b values dropped, the rest rescaled, the mask drawn from the key
/// [`ForwardCtx::mask_key`]`(stream)` ([`kernels::dropblock`] derives it from the seed's
/// recipe). No parameters.
///
/// The formulas, forward and backward: `docs/walkthrough.md`, "DropBlock", in its sections 2
/// and 3. The forward scales x in its own buffer; [`DropBlock::backward_owned`] turns dy into
/// dx in place, [`DropBlock::backward`] returns a fresh dx.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropBlock {
    /// Side of the dropped squares; the seed uses 5.
    pub block_size: usize,
    /// Probability of keeping a value, in (0, 1]; the trainer lowers it every epoch.
    pub keep_prob: f32,
    /// This layer's Philox stream: distinct for every random layer of a model.
    pub stream: u32,
}

/// What [`DropBlock::backward`] needs from its forward.
#[derive(Debug, Clone, PartialEq)]
pub struct DropBlockCache {
    /// The drawn mask ((N, C, H, W) bytes and its scale, on x's device), or `None` for the
    /// identity.
    mask: Option<DropBlockMask>,
    /// x: (N, C, H, W), the forward's input shape.
    shape: Shape,
}

impl DropBlock {
    /// # Errors
    /// [`Error::Config`] if `block_size` is 0 or `keep_prob` is not in (0, 1].
    pub fn new(block_size: usize, keep_prob: f32, stream: u32) -> Result<DropBlock> {
        let layer = DropBlock {
            block_size,
            keep_prob,
            stream,
        };
        layer.check()?;
        Ok(layer)
    }

    fn check(&self) -> Result<()> {
        let msg = if self.block_size == 0 {
            "block size is 0".to_string()
        } else if !(self.keep_prob > 0.0 && self.keep_prob <= 1.0) {
            format!("keep probability {} is outside (0, 1]", self.keep_prob)
        } else {
            return Ok(());
        };
        Err(Error::Config {
            layer: "DropBlock",
            msg,
        })
    }

    /// x: (N, C, H, W) -> y: (N, C, H, W). The context's seed and step select the mask together
    /// with `stream`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad block size or keep probability; a shape error if x is not
    /// rank 4.
    pub fn forward(&self, x: Tensor, ctx: ForwardCtx) -> Result<(Tensor, DropBlockCache)> {
        let _timer = profile::timed(LayerKind::DropBlock, Pass::Forward);
        self.check()?;
        x.expect_nchw("DropBlock::forward", "x")?;
        let shape = x.shape().clone();
        let mask = if ctx.mode.draws_masks() {
            let key = ctx.mask_key(self.stream);
            dropblock_mask(&shape, x.device(), self.block_size, self.keep_prob, key)?
        } else {
            None
        };
        let Some(mask) = mask else {
            return Ok((x, DropBlockCache { mask: None, shape }));
        };
        let mut y = x;
        dropblock_apply_in_place(&mut y, &mask)?;
        let mask = Some(mask);
        Ok((y, DropBlockCache { mask, shape }))
    }

    /// dy: (N, C, H, W) -> dx: (N, C, H, W), fresh.
    ///
    /// # Errors
    /// dy's shape differs from the forward's input.
    pub fn backward(&self, dy: &Tensor, cache: DropBlockCache) -> Result<Tensor> {
        self.backward_owned(dy.clone(), cache)
    }

    /// dy: (N, C, H, W) -> dx: (N, C, H, W), in dy's buffer (overwritten).
    ///
    /// # Errors
    /// dy's shape differs from the forward's input.
    pub fn backward_owned(&self, mut dy: Tensor, cache: DropBlockCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::DropBlock, Pass::Backward);
        dy.expect_shape("DropBlock::backward", "dy", cache.shape.dims())?;
        if let Some(mask) = cache.mask {
            dropblock_apply_in_place(&mut dy, &mask)?;
        }
        Ok(dy)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tensor_core::Device;

    use super::*;
    use crate::gradcheck::Probe;
    use crate::Mode;
    const LAYER: DropBlock = DropBlock {
        block_size: 3,
        keep_prob: 0.7,
        stream: 5,
    };

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [2, 3, 9, 7];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let r = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let ctx = ForwardCtx::train(7, 11);
        let (y, cache) = LAYER.forward(x.clone(), ctx).unwrap();
        let y = y.to_vec();
        assert!(
            y.contains(&0.0) && y.iter().any(|&v| v != 0.0),
            "a trivial mask"
        );
        let dx = LAYER.backward(&r, cache).unwrap();
        // With the mask fixed by the key, DropBlock is linear in x.
        Probe::linear(&r).assert_gradient("dx", &x, &dx, |x| LAYER.forward(x, ctx).unwrap().0);
    }

    /// The seed's fourth block: a 4x4 map with block 5 passes through, in training too.
    #[test]
    fn identity_on_a_4x4_map_with_block_5() {
        let layer = DropBlock::new(5, 0.85, 1).unwrap();
        let x =
            Tensor::uniform([2, 3, 4, 4], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let (y, cache) = layer.forward(x.clone(), ForwardCtx::train(1, 1)).unwrap();
        assert_eq!(y, x);
        assert_eq!(layer.backward(&x, cache).unwrap(), x);
    }

    #[test]
    fn eval_and_keep_one_are_the_identity() {
        let x =
            Tensor::uniform([2, 3, 8, 8], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let all = DropBlock {
            keep_prob: 1.0,
            ..LAYER
        };
        let eval = ForwardCtx {
            mode: Mode::Eval,
            ..ForwardCtx::train(1, 1)
        };
        for (layer, ctx) in [(LAYER, eval), (all, ForwardCtx::train(1, 1))] {
            let (y, cache) = layer.forward(x.clone(), ctx).unwrap();
            assert_eq!(y, x);
            assert_eq!(layer.backward(&x, cache).unwrap(), x);
        }
    }

    /// keep_prob is a public field that the trainer lowers between epochs: the next forward uses it.
    #[test]
    fn a_lower_keep_prob_drops_more() {
        let x = Tensor::full([4, 8, 16, 16], 1.0);
        let zeros = |keep_prob| {
            let layer = DropBlock { keep_prob, ..LAYER };
            let (y, _) = layer.forward(x.clone(), ForwardCtx::train(3, 4)).unwrap();
            y.to_vec().iter().filter(|&&v| v == 0.0).count()
        };
        let (high, low) = (zeros(0.95), zeros(0.8));
        assert!(0 < high && high < low, "{high} {low}");
    }

    /// On the emulated device the mask is drawn there and kept there for the backward; y and dx
    /// are the CPU's, bit for bit.
    #[test]
    fn emu_forward_and_backward_match_the_cpu_with_the_mask_on_the_device() {
        let emu = |t: &Tensor| kernels::cuda::to_device(t, Device::CudaEmu).unwrap();
        let dims = [2, 3, 9, 7];
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let x = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let dy = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let (y, cache) = LAYER.forward(x.clone(), ForwardCtx::train(7, 11)).unwrap();
        let (ey, ecache) = LAYER.forward(emu(&x), ForwardCtx::train(7, 11)).unwrap();
        let mask = ecache
            .mask
            .as_ref()
            .expect("a 9 x 7 map with block 3 draws a mask");
        assert_eq!(mask.device(), Device::CudaEmu);
        assert_eq!((ey.device(), ey.to_vec()), (Device::CudaEmu, y.to_vec()));
        let dx = LAYER.backward(&dy, cache).unwrap();
        let edx = LAYER.backward_owned(emu(&dy), ecache).unwrap();
        assert_eq!((edx.device(), edx.to_vec()), (Device::CudaEmu, dx.to_vec()));
    }

    #[test]
    fn bad_arguments_are_errors() {
        for (b, keep) in [(0, 0.9), (3, 0.0), (3, 1.1), (3, f32::NAN)] {
            let e = DropBlock::new(b, keep, 0).unwrap_err();
            assert!(e.to_string().starts_with("DropBlock: "), "{e}");
            let layer = DropBlock {
                block_size: b,
                keep_prob: keep,
                stream: 0,
            };
            assert!(layer
                .forward(Tensor::zeros([1, 1, 8, 8]), ForwardCtx::EVAL)
                .is_err());
        }
        let e = LAYER
            .forward(Tensor::zeros([2, 8, 8]), ForwardCtx::train(0, 0))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("DropBlock::forward: x has shape (2, 8, 8)"),
            "{e}"
        );
        let (_, cache) = LAYER
            .forward(Tensor::zeros([1, 2, 8, 8]), ForwardCtx::train(0, 0))
            .unwrap();
        let e = LAYER
            .backward(&Tensor::zeros([1, 2, 8, 9]), cache)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "DropBlock::backward: dy has shape (1, 2, 8, 9), expected (1, 2, 8, 8)"
        );
    }
}

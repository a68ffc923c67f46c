//! Inverted dropout, for the fully-connected layers.

use kernels::dropout::{dropout_backward, dropout_forward};
use kernels::philox::MaskKey;
use tensor_core::{Shape, Tensor};

use crate::profile::{self, LayerKind, Pass};
use crate::{Error, ForwardCtx, Result};

/// Inverted dropout with keep probability k = `keep_prob`, in training only (the identity in
/// evaluation and at k = 1): each value kept with probability k and scaled by 1 / k, the mask
/// drawn from the key [`ForwardCtx::mask_key`]`(stream)`. No parameters. The mask is not stored:
/// backward redraws it from the same key. dx is a fresh tensor.
///
/// The formulas, forward and backward: `docs/walkthrough.md`, "Dropout", in its sections 2 and
/// 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of keeping a value, in (0, 1]; the seed uses 0.5.
    pub keep_prob: f32,
    /// This layer's Philox stream: distinct for every random layer of a model.
    pub stream: u32,
}

/// What [`Dropout::backward`] needs from its forward.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutCache {
    /// The mask's key and keep probability, or `None` when the forward was the identity.
    mask: Option<(MaskKey, f32)>,
    /// The forward's input shape, any rank.
    shape: Shape,
}

fn check_keep(keep_prob: f32) -> Result<()> {
    if keep_prob > 0.0 && keep_prob <= 1.0 {
        Ok(())
    } else {
        Err(Error::Config {
            layer: "Dropout",
            msg: format!("keep probability {keep_prob} is outside (0, 1]"),
        })
    }
}

impl Dropout {
    /// # Errors
    /// [`Error::Config`] if `keep_prob` is not in (0, 1].
    pub fn new(keep_prob: f32, stream: u32) -> Result<Dropout> {
        check_keep(keep_prob)?;
        Ok(Dropout { keep_prob, stream })
    }

    /// x: any shape -> y: the same shape. The context's seed and step select the mask together
    /// with `stream`.
    ///
    /// # Errors
    /// [`Error::Config`] if `keep_prob` is not in (0, 1].
    pub fn forward(&self, x: Tensor, ctx: ForwardCtx) -> Result<(Tensor, DropoutCache)> {
        let _timer = profile::timed(LayerKind::Dropout, Pass::Forward);
        check_keep(self.keep_prob)?;
        let shape = x.shape().clone();
        if !ctx.mode.draws_masks() || self.keep_prob == 1.0 {
            return Ok((x, DropoutCache { mask: None, shape }));
        }
        let key = ctx.mask_key(self.stream);
        let mut y = x.new_zeros(shape.clone())?;
        dropout_forward(&mut y, &x, self.keep_prob, key)?;
        let mask = Some((key, self.keep_prob));
        Ok((y, DropoutCache { mask, shape }))
    }

    /// dy: the forward's shape -> dx: the same shape, fresh.
    ///
    /// # Errors
    /// dy's shape differs from the forward's input.
    pub fn backward(&self, dy: &Tensor, cache: DropoutCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::Dropout, Pass::Backward);
        dy.expect_shape("Dropout::backward", "dy", cache.shape.dims())?;
        let Some((key, keep)) = cache.mask else {
            return Ok(dy.clone());
        };
        let mut dx = dy.new_zeros(cache.shape)?;
        dropout_backward(&mut dx, dy, keep, key)?;
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gradcheck::Probe;
    use crate::Mode;
    const LAYER: Dropout = Dropout {
        keep_prob: 0.6,
        stream: 3,
    };

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [5, 7];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let r = Tensor::uniform(dims, -1.0, 1.0, &mut rng).unwrap();
        let ctx = ForwardCtx::train(42, 9);
        let (y, cache) = LAYER.forward(x.clone(), ctx).unwrap();
        let y = y.to_vec();
        assert!(
            y.contains(&0.0) && y.iter().any(|&v| v != 0.0),
            "a trivial mask"
        );
        let dx = LAYER.backward(&r, cache).unwrap();
        // With the mask fixed by the key, dropout is linear in x.
        Probe::linear(&r).assert_gradient("dx", &x, &dx, |x| LAYER.forward(x, ctx).unwrap().0);
    }

    #[test]
    fn eval_and_keep_one_are_the_identity() {
        let x = Tensor::uniform([4, 6], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let all = Dropout {
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

    #[test]
    fn the_mask_depends_on_seed_step_and_stream_only() {
        let x = Tensor::full([64], 1.0);
        let run =
            |layer: Dropout, seed, step| layer.forward(x.clone(), ForwardCtx::train(seed, step));
        let (a, _) = run(LAYER, 1, 2).unwrap();
        assert_eq!(run(LAYER, 1, 2).unwrap().0, a);
        assert_ne!(run(LAYER, 1, 3).unwrap().0, a);
        assert_ne!(run(LAYER, 2, 2).unwrap().0, a);
        assert_ne!(run(Dropout { stream: 4, ..LAYER }, 1, 2).unwrap().0, a);
    }

    #[test]
    fn bad_arguments_are_errors() {
        for keep in [0.0f32, 1.5, f32::NAN] {
            let e = Dropout::new(keep, 0).unwrap_err();
            assert!(
                e.to_string().starts_with("Dropout: keep probability"),
                "{e}"
            );
            let layer = Dropout {
                keep_prob: keep,
                stream: 0,
            };
            assert!(layer
                .forward(Tensor::zeros([2]), ForwardCtx::train(0, 0))
                .is_err());
        }
        let (_, cache) = LAYER
            .forward(Tensor::zeros([2, 3]), ForwardCtx::train(0, 0))
            .unwrap();
        let e = LAYER.backward(&Tensor::zeros([3, 2]), cache).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dropout::backward: dy has shape (3, 2), expected (2, 3)"
        );
    }
}

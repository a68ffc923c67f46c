//! The seed's fully-connected stage, built from the layers of this crate.
//!
//! ```text
//! hidden stage (fc1, fc2): y = dropout(relu(bn(linear(x))))
//! output stage (fc3):      y = bn(linear(x))                  the logits
//! ```
//!
//! Backward runs the same calls in reverse, each layer's backward as its own doc gives it.
//!
//! The stage's batch norm folds the *biased* batch variance into its running variance, as the
//! seed's TensorFlow layers did for these 2-D inputs (SPEC "Layer details"; the conv blocks' take
//! the unbiased one).

use kernels::batchnorm::{BatchNormConfig, RunningVariance};
use rand::Rng;
use tensor_core::Tensor;

use crate::{
    join, BatchNorm1d, BatchNormCache, Dropout, DropoutCache, ForwardCtx, Linear, LinearCache,
    Param, Parameters, ReLU, ReluCache, Result,
};

/// Linear (no bias) -> batch norm -> ReLU -> dropout for a hidden stage; linear -> batch norm
/// for the output stage. x: (N, F) -> y: (N, O).
///
/// Parameter names follow the equivalent PyTorch module: `weight` (the linear layer's, (O, F)),
/// `bn.weight`, `bn.bias`, and the buffers `bn.running_mean`, `bn.running_var`.
#[derive(Debug, Clone)]
pub struct FcStage {
    pub linear: Linear,
    pub bn: BatchNorm1d,
    /// ReLU then dropout, for the hidden stages; `None` for the output stage.
    pub dropout: Option<Dropout>,
}

/// What [`FcStage::backward`] needs: each layer's cache, in forward order.
#[derive(Debug)]
pub struct FcStageCache {
    linear: LinearCache,
    bn: BatchNormCache,
    act: Option<(ReluCache, DropoutCache)>,
}

impl FcStage {
    /// A hidden stage from `in_features` (F) to `out_features` (O): its linear layer
    /// Xavier-initialised from `rng`, its batch norm with the eps and momentum of `bn` (and the
    /// biased running variance, whatever `bn` says: module doc), dropout keeping
    /// `keep_prob` and drawing its masks from Philox stream `stream`.
    ///
    /// # Errors
    /// A size of 0, a keep probability outside (0, 1], or a bad batch-norm configuration.
    pub fn hidden(
        in_features: usize,
        out_features: usize,
        bn: BatchNormConfig,
        keep_prob: f32,
        stream: u32,
        rng: &mut impl Rng,
    ) -> Result<FcStage> {
        Ok(FcStage {
            dropout: Some(Dropout::new(keep_prob, stream)?),
            ..FcStage::output(in_features, out_features, bn, rng)?
        })
    }

    /// The output stage: linear then batch norm (as in [`FcStage::hidden`]), no activation and no
    /// dropout.
    ///
    /// # Errors
    /// A size of 0, or a bad batch-norm configuration.
    pub fn output(
        in_features: usize,
        out_features: usize,
        bn: BatchNormConfig,
        rng: &mut impl Rng,
    ) -> Result<FcStage> {
        Ok(FcStage {
            linear: Linear::new(in_features, out_features, rng)?,
            bn: BatchNorm1d::with_config(out_features, FcStage::batchnorm_config(bn))?,
            dropout: None,
        })
    }

    /// The configuration of the stage's batch norm: `bn`'s eps and momentum, the biased running
    /// variance.
    pub fn batchnorm_config(bn: BatchNormConfig) -> BatchNormConfig {
        BatchNormConfig {
            running_variance: RunningVariance::Biased,
            ..bn
        }
    }

    /// x: (N, F) -> y: (N, O). The context's seed and step key the dropout mask (only drawn in
    /// training).
    pub fn forward(&mut self, x: Tensor, ctx: ForwardCtx) -> Result<(Tensor, FcStageCache)> {
        let (a, linear) = self.linear.forward(x, ctx.mode)?;
        let (a, bn) = self.bn.forward(a, ctx.mode)?;
        let (y, act) = match &self.dropout {
            Some(dropout) => {
                let (a, relu) = ReLU.forward(a, ctx.mode)?;
                let (a, drop) = dropout.forward(a, ctx)?;
                (a, Some((relu, drop)))
            }
            None => (a, None),
        };
        Ok((y, FcStageCache { linear, bn, act }))
    }

    /// dy: (N, O) -> dx: (N, F), fresh. Accumulates every parameter's gradient.
    pub fn backward(&mut self, dy: &Tensor, cache: FcStageCache) -> Result<Tensor> {
        let d = match (&self.dropout, cache.act) {
            (Some(dropout), Some((relu, drop))) => {
                let d = dropout.backward(dy, drop)?;
                ReLU.backward_owned(d, relu)?
            }
            _ => dy.clone(),
        };
        let d = self.bn.backward(&d, cache.bn)?;
        self.linear.backward(&d, cache.linear)
    }
}

impl Parameters for FcStage {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        self.linear.visit_params(prefix, f);
        self.bn.visit_params(&join(prefix, "bn"), f);
    }

    fn visit_buffers(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        self.bn.visit_buffers(&join(prefix, "bn"), f);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gradcheck::{Probe, MIN_SMOOTH, SMOOTH_TOL};
    use crate::Mode;

    /// N=6, F=5 -> O=4, dropout keeping 0.7 (a mask with zeros at this key).
    fn setup(hidden: bool) -> (FcStage, Tensor) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let bn = BatchNormConfig::default();
        let stage = if hidden {
            FcStage::hidden(5, 4, bn, 0.7, 4, &mut rng).unwrap()
        } else {
            FcStage::output(5, 4, bn, &mut rng).unwrap()
        };
        let x = Tensor::uniform([6, 5], -1.0, 1.0, &mut rng).unwrap();
        (stage, x)
    }

    #[test]
    fn hidden_and_output_stage_gradients_match_finite_differences() {
        let ctx = ForwardCtx::train(9, 2);
        for hidden in [true, false] {
            let (stage, x) = setup(hidden);
            let r = Tensor::uniform([6, 4], -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
            let mut trained = stage.clone();
            let (_, cache) = trained.forward(x.clone(), ctx).unwrap();
            let dx = trained.backward(&r, cache).unwrap();
            // Batch norm over 6 rows and a ReLU whose kinks the inputs avoid only by chance: the
            // checks of a composite.
            let probe = Probe::composite(&r);
            let forward = |s: &mut FcStage, x: Tensor| s.clone().forward(x, ctx).unwrap().0;
            let what = format!("FcStage (hidden {hidden})");
            let mut base = stage.clone();
            probe.assert_gradient_where_smooth(&what, &x, &dx, SMOOTH_TOL, MIN_SMOOTH, |x| {
                forward(&mut base, x)
            });
            probe.assert_param_gradients(&what, &mut trained, |s| forward(s, x.clone()));
        }
    }

    /// The stage's batch norm takes the biased variance into its running variance (the conv
    /// blocks' the unbiased one, whatever the configuration given says): an identity linear layer
    /// hands it a known batch.
    #[test]
    fn fc_batch_norm_averages_the_biased_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut stage = FcStage::output(2, 2, BatchNormConfig::default(), &mut rng).unwrap();
        stage.linear.weight.value = Tensor::from_vec([2, 2], vec![1., 0., 0., 1.]).unwrap();
        // Feature 0 is 1, 2, 3, 4 (mean 2.5, biased var 1.25), feature 1 is 5, 5, 7, 7 (mean 6,
        // biased var 1): r = 0.997 r + 0.003 b from mean 0 and var 1.
        let x = Tensor::from_vec([4, 2], vec![1., 5., 2., 5., 3., 7., 4., 7.]).unwrap();
        stage.forward(x, ForwardCtx::train(0, 0)).unwrap();
        let want = [0.997 + 0.003 * 1.25, 0.997 + 0.003 * 1.0];
        for (got, want) in stage.bn.running_var.to_vec().iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "running_var {got}, want {want}");
        }
        let unbiased = BatchNormConfig {
            running_variance: RunningVariance::Unbiased,
            ..BatchNormConfig::default()
        };
        let hidden = FcStage::hidden(3, 2, unbiased, 0.5, 4, &mut rng).unwrap();
        assert_eq!(hidden.bn.config.running_variance, RunningVariance::Biased);
        let biased = FcStage::batchnorm_config(unbiased);
        let block = crate::ConvBlock::new(2, 3, biased, &mut rng).unwrap();
        for bn in [&block.bn1, &block.bn2] {
            assert_eq!(bn.config.running_variance, RunningVariance::Unbiased);
        }
    }

    /// Precise batch norm's passes draw no dropout mask: the output is the training forward's
    /// without dropout.
    #[test]
    fn recompute_stats_draws_no_mask() {
        let (stage, x) = setup(true);
        let (y, _) = stage
            .clone()
            .forward(x.clone(), ForwardCtx::recompute_stats(0))
            .unwrap();
        let mut unmasked = stage.clone();
        unmasked.dropout = Some(Dropout::new(1.0, 4).unwrap());
        let (want, _) = unmasked
            .forward(x.clone(), ForwardCtx::train(9, 2))
            .unwrap();
        assert_eq!(y.to_vec(), want.to_vec());
        let (masked, _) = stage.clone().forward(x, ForwardCtx::train(9, 2)).unwrap();
        assert_ne!(
            masked.to_vec(),
            want.to_vec(),
            "the training pass drops values"
        );
    }

    #[test]
    fn names_follow_the_pytorch_module_and_eval_skips_dropout() {
        let (mut stage, x) = setup(true);
        let mut names = Vec::new();
        stage.visit_params("fc1", &mut |n, _| names.push(n.to_string()));
        stage.visit_buffers("fc1", &mut |n, _| names.push(n.to_string()));
        assert_eq!(
            names,
            [
                "fc1.weight",
                "fc1.bn.weight",
                "fc1.bn.bias",
                "fc1.bn.running_mean",
                "fc1.bn.running_var"
            ]
        );
        let (a, _) = stage.forward(x.clone(), ForwardCtx::EVAL).unwrap();
        let other_key = ForwardCtx {
            mode: Mode::Eval,
            ..ForwardCtx::train(5, 6)
        };
        let (b, _) = stage.forward(x, other_key).unwrap();
        assert_eq!(a, b, "eval output depends on the mask key");
    }
}

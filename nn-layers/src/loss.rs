//! The training loss: softmax cross-entropy against the fine labels.

use kernels::softmax_ce::{
    softmax_ce_backward, softmax_ce_forward, softmax_ce_forward_tallied, LossTally,
};
use tensor_core::Tensor;

use crate::profile::{self, LayerKind, Pass};
use crate::Result;

/// Mean softmax cross-entropy of logits (N, classes) against the labels. No parameters; the same
/// in training and evaluation.
///
/// The formulas, forward and backward (the gradient of the loss itself): `docs/walkthrough.md`,
/// "The loss", in its sections 2 and 3. dlogits is a fresh tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftmaxCrossEntropy;

/// What [`SoftmaxCrossEntropy::backward`] needs from its forward; the probabilities also give
/// the predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxCeCache {
    /// probs: (N, classes), softmax of the logits.
    probs: Tensor,
    /// labels: N values in 0..classes.
    labels: Vec<u32>,
}

impl SoftmaxCeCache {
    /// probs: (N, classes), each row the softmax of that row's logits.
    pub fn probs(&self) -> &Tensor {
        &self.probs
    }

    /// The N labels the loss was computed against.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }
}

impl SoftmaxCrossEntropy {
    /// logits: (N, classes), labels: N -> (mean loss, cache).
    ///
    /// # Errors
    /// logits not (N, classes) with N, classes > 0, a label count other than N, or a label
    /// >= classes (the error names its index and value).
    pub fn forward(&self, logits: &Tensor, labels: &[u32]) -> Result<(f32, SoftmaxCeCache)> {
        let _timer = profile::timed(LayerKind::Loss, Pass::Forward);
        let mut probs = logits.new_zeros(logits.shape().clone())?;
        let loss = softmax_ce_forward(&mut probs, logits, labels)?;
        let labels = labels.to_vec();
        Ok((loss, SoftmaxCeCache { probs, labels }))
    }

    /// As [`SoftmaxCrossEntropy::forward`], but the loss is not read back: the minibatch's mean
    /// loss and correct count are added to `tally`, on the logits' device, for the training loop
    /// to read when it logs. logits: (N, classes), labels: N -> cache.
    ///
    /// # Errors
    /// As [`SoftmaxCrossEntropy::forward`]; a tally on another device than the logits.
    pub fn forward_tallied(
        &self,
        logits: &Tensor,
        labels: &[u32],
        tally: &mut LossTally,
    ) -> Result<SoftmaxCeCache> {
        let _timer = profile::timed(LayerKind::Loss, Pass::Forward);
        let mut probs = logits.new_zeros(logits.shape().clone())?;
        softmax_ce_forward_tallied(&mut probs, logits, labels, tally)?;
        let labels = labels.to_vec();
        Ok(SoftmaxCeCache { probs, labels })
    }

    /// cache -> dlogits: (N, classes), fresh.
    ///
    /// # Errors
    /// Only if the cache was altered; a cache from [`SoftmaxCrossEntropy::forward`] always works.
    pub fn backward(&self, cache: SoftmaxCeCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::Loss, Pass::Backward);
        let mut dlogits = cache.probs.new_zeros(cache.probs.shape().clone())?;
        softmax_ce_backward(&mut dlogits, &cache.probs, &cache.labels)?;
        Ok(dlogits)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gradcheck::{compare, numeric_grad, Tolerance};

    /// The loss comes back as f32 (values near 2, rounding 1.2e-7) and is differenced over a step
    /// of 2e-2: about 1e-5 of noise on gradients of size up to 1/N.
    const CE_TOL: Tolerance = Tolerance {
        atol: 5e-5,
        rtol: 1e-3,
    };
    const EPS: f32 = 1e-2;

    #[test]
    fn gradients_match_finite_differences() {
        let dims = [5, 7];
        let logits = Tensor::uniform(dims, -2.0, 2.0, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let labels = [6u32, 0, 3, 3, 1];
        let (_, cache) = SoftmaxCrossEntropy.forward(&logits, &labels).unwrap();
        let dlogits = SoftmaxCrossEntropy.backward(cache).unwrap();
        let numeric = numeric_grad(logits.as_slice().unwrap(), EPS, |v| {
            let z = Tensor::from_vec(dims, v.to_vec()).unwrap();
            SoftmaxCrossEntropy.forward(&z, &labels).unwrap().0 as f64
        });
        compare("dlogits", dlogits.as_slice().unwrap(), &numeric, CE_TOL)
            .unwrap_or_else(|m| panic!("{m}"));
    }

    /// Uniform logits over C classes: p = 1/C everywhere and the loss is log C.
    #[test]
    fn uniform_logits_give_log_classes() {
        let (loss, cache) = SoftmaxCrossEntropy
            .forward(&Tensor::full([4, 100], 0.3), &[0, 17, 99, 50])
            .unwrap();
        assert!((loss - 100f32.ln()).abs() < 1e-5, "{loss}");
        assert!(cache
            .probs()
            .to_vec()
            .iter()
            .all(|&p| (p - 0.01).abs() < 1e-8));
        assert_eq!(cache.labels(), &[0, 17, 99, 50]);
    }

    #[test]
    fn an_out_of_range_label_is_an_error() {
        let e = SoftmaxCrossEntropy
            .forward(&Tensor::zeros([3, 10]), &[1, 2, 10])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "softmax_ce_forward: label 10 at index 2 is out of range for 10 classes"
        );
        assert!(SoftmaxCrossEntropy
            .forward(&Tensor::zeros([3, 10]), &[1, 2])
            .is_err());
    }
}

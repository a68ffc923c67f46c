//! The rectifier.

use kernels::relu::{relu_backward_in_place, relu_forward_in_place, ReluMask};
use tensor_core::Tensor;

use crate::profile::{self, LayerKind, Pass};
use crate::{Mode, Result};

/// The rectifier, elementwise, on a tensor of any shape; a NaN stays NaN. No parameters; the same
/// in training and evaluation.
///
/// The formulas, forward and backward (the subgradient at 0): `docs/walkthrough.md`, "ReLU", in
/// its sections 2 and 3.
///
/// Both passes work in place on the tensor they own: the forward turns x into y and keeps only
/// where x was > 0 (a byte per value on the CPU, see [`ReluMask`]); [`ReLU::backward_owned`]
/// turns dy into dx. [`ReLU::backward`] takes dy by reference and returns a fresh dx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReLU;

/// What [`ReLU::backward`] needs from its forward.
#[derive(Debug, Clone, PartialEq)]
pub struct ReluCache {
    /// Where the forward's input (any shape) was > 0.
    mask: ReluMask,
}

impl ReluCache {
    /// A cache for a ReLU computed elsewhere (the residual block's fused sum and ReLU).
    pub fn from_mask(mask: ReluMask) -> ReluCache {
        ReluCache { mask }
    }

    /// Where the forward's input was > 0.
    pub fn mask(&self) -> &ReluMask {
        &self.mask
    }
}

impl ReLU {
    /// x: any shape -> y: the same shape (x's buffer, overwritten).
    pub fn forward(&self, mut x: Tensor, _mode: Mode) -> Result<(Tensor, ReluCache)> {
        let _timer = profile::timed(LayerKind::Relu, Pass::Forward);
        let mask = relu_forward_in_place(&mut x)?;
        Ok((x, ReluCache { mask }))
    }

    /// dy: the forward's shape -> dx: the same shape, fresh.
    ///
    /// # Errors
    /// dy's shape differs from the forward's input.
    pub fn backward(&self, dy: &Tensor, cache: ReluCache) -> Result<Tensor> {
        self.backward_owned(dy.clone(), cache)
    }

    /// dy: the forward's shape -> dx: the same shape, in dy's buffer (overwritten).
    ///
    /// # Errors
    /// dy's shape differs from the forward's input.
    pub fn backward_owned(&self, mut dy: Tensor, cache: ReluCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::Relu, Pass::Backward);
        relu_backward_in_place(&mut dy, &cache.mask)?;
        Ok(dy)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gradcheck::Probe;

    /// Inputs stay at least MARGIN from the kink, so a step of
    /// [`LINEAR_EPS`](crate::gradcheck::LINEAR_EPS) never crosses it and ReLU is linear around
    /// every input.
    const MARGIN: f32 = 0.1;

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let u = Tensor::uniform([3, 2, 5, 7], -1.0, 1.0, &mut rng).unwrap();
        let x: Vec<f32> = u
            .to_vec()
            .iter()
            .map(|&v| v.signum() * (MARGIN + v.abs()))
            .collect();
        let x = Tensor::from_vec([3, 2, 5, 7], x).unwrap();
        let r = Tensor::uniform([3, 2, 5, 7], -1.0, 1.0, &mut rng).unwrap();
        let (y, cache) = ReLU.forward(x.clone(), Mode::Train).unwrap();
        // Both sides of the kink are exercised.
        let y = y.to_vec();
        assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0));
        let dx = ReLU.backward(&r, cache).unwrap();
        Probe::linear(&r)
            .assert_gradient("dx", &x, &dx, |x| ReLU.forward(x, Mode::Train).unwrap().0);
    }

    #[test]
    fn a_wrong_dy_shape_names_the_op_and_the_shapes() {
        let (_, cache) = ReLU.forward(Tensor::zeros([2, 3]), Mode::Eval).unwrap();
        let e = ReLU.backward(&Tensor::zeros([3, 2]), cache).unwrap_err();
        assert_eq!(
            e.to_string(),
            "relu_backward_in_place: dy has shape (3, 2), expected (2, 3)"
        );
    }
}

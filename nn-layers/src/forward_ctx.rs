//! What a forward pass needs beside its input: the [`ForwardCtx`] a model hands to its composite
//! and random layers.

use kernels::philox::MaskKey;
use tensor_core::Tensor;

use crate::{Error, Mode, Result};

/// The mode of a forward pass, the key of its random masks, and whether to check each stage's
/// output. Small and `Copy`: a model passes it down by value to every block, stage and random
/// layer (the other layers take only its [`ForwardCtx::mode`]).
///
/// ```
/// use nn_layers::{ForwardCtx, Mode};
/// let ctx = ForwardCtx::train(7, 120);
/// assert_eq!((ctx.mode, ctx.mask_key(3).layer), (Mode::Train, 3));
/// assert_eq!(ForwardCtx::EVAL.mode, Mode::Eval);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardCtx {
    pub mode: Mode,
    /// The run's seed: with `step` and a layer's own stream it keys that layer's masks
    /// ([`ForwardCtx::mask_key`]), so a mask is a pure function of (seed, step, layer).
    pub seed: u64,
    /// The optimizer step the pass belongs to (counted from 0).
    pub step: u64,
    /// Whether [`ForwardCtx::check`] reads each checked stage's output back and refuses a NaN or an
    /// infinity: finds where a diverged run first went wrong, at the price of one read per stage.
    pub check_finite: bool,
}

impl ForwardCtx {
    /// Evaluation: batch norm from its running statistics, no masks (so no key), no checks.
    pub const EVAL: ForwardCtx = ForwardCtx {
        mode: Mode::Eval,
        seed: 0,
        step: 0,
        check_finite: false,
    };

    /// Training at optimizer step `step` of the run seeded `seed`, without checks.
    pub const fn train(seed: u64, step: u64) -> ForwardCtx {
        ForwardCtx {
            mode: Mode::Train,
            seed,
            step,
            check_finite: false,
        }
    }

    /// Precise batch norm's pass over the batch that `averaged` batches precede
    /// ([`Mode::RecomputeStats`]): no masks (so no key), no checks.
    pub const fn recompute_stats(averaged: u32) -> ForwardCtx {
        ForwardCtx {
            mode: Mode::RecomputeStats { averaged },
            ..ForwardCtx::EVAL
        }
    }

    /// This context with [`ForwardCtx::check_finite`] on.
    pub const fn checking_finite(self) -> ForwardCtx {
        ForwardCtx {
            check_finite: true,
            ..self
        }
    }

    /// The key of the masks of the random layer with Philox stream `stream`.
    pub const fn mask_key(&self, stream: u32) -> MaskKey {
        MaskKey {
            seed: self.seed,
            step: self.step,
            layer: stream,
        }
    }

    /// With [`ForwardCtx::check_finite`]: refuses `y`, the output of the stage `stage()` names,
    /// if it holds a NaN or an infinity. Without: nothing (no read, and `stage` is not called).
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the stage; a failed read of a device tensor.
    pub fn check(&self, y: &Tensor, stage: impl FnOnce() -> String) -> Result<()> {
        if !self.check_finite || y.try_to_vec()?.iter().all(|v| v.is_finite()) {
            return Ok(());
        }
        Err(Error::NonFinite { stage: stage() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_checking_context_reads_and_refuses() {
        let bad = Tensor::from_vec([3], vec![1.0, f32::NAN, 2.0]).unwrap();
        let named = || "blocks.1".to_string();
        let quiet = ForwardCtx::train(1, 2);
        quiet
            .check(&bad, || unreachable!("no name is built"))
            .unwrap();
        let e = quiet.checking_finite().check(&bad, named).unwrap_err();
        assert_eq!(e, Error::NonFinite { stage: named() });
        assert_eq!(
            e.to_string(),
            "blocks.1: the output holds a NaN or an infinity"
        );
        let good = Tensor::from_vec([2], vec![0.0, -3.5]).unwrap();
        ForwardCtx::EVAL
            .checking_finite()
            .check(&good, named)
            .unwrap();
    }
}

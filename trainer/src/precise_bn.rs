//! Precise batch norm, and whether the running statistics an evaluation uses can be trusted.
//!
//! In training a batch norm normalises with the batch's statistics and moves its running ones
//! towards them, r = m r + (1 - m) b; evaluation normalises with the running ones. After t steps
//! from the initial values r0 (mean 0, variance 1), r = m^t r0 + (1 - m) sum_i m^(t-1-i) b_i: the
//! initial values still weigh w = m^t ([`initial_weight`]). With the seed's m = 0.997 that is 55%
//! after one epoch of 200 steps, 5% after 1,000 steps and 1% after 1,533 (7.7 epochs); a short run
//! on a small dataset (6 epochs of 6 steps: w = 90%) evaluates with statistics that are mostly the
//! initial values and reports an accuracy far below what its network learned.
//!
//! How much w matters: evaluation computes (x - r_mean) / sqrt(r_var). With w on (0, 1) and the
//! rest on the population's (mu, sigma^2), the mean is off by w |mu| / sigma standard deviations
//! and the scale by a factor 1 / sqrt(1 - w + w / sigma^2). The inputs of this network's batch
//! norms have |mu| / sigma up to a few and sigma^2 from about 0.1 to 10: at w = 1% the errors stay
//! near 3% per layer (a shift of 0.03 sigma at |mu| / sigma = 3, a scale off by 4% at
//! sigma^2 = 0.1), at w = 5% they reach 0.15 sigma and 17%, compounded over 19 batch norms. So the
//! statistics count as converged when w <= 1% ([`CONVERGED_WEIGHT`]).
//!
//! Precise batch norm ([`recompute`]) replaces the running statistics by their average over a
//! number of training batches (`--precise-bn N`: the first N batches of the epoch just trained, as
//! training saw them, augmented), computed by the current network. Each batch norm normalises with
//! the batch's statistics, as in training, and its running statistics become the equal-weight mean
//! of the N batches' ([`Mode::RecomputeStats`](nn_layers::Mode::RecomputeStats)). Dropout and
//! DropBlock are off, as in evaluation: with them on, the batch norms after them would average the
//! statistics of masked activations that evaluation never sees (inverted dropout at keep 0.5
//! doubles the second moment of what it keeps). It changes no weight, and no training step reads
//! the running statistics, so training is bit-identical with or without it; the statistics it
//! leaves are what the checkpoint saves and what the next epoch's moving average starts from.
//!
//! By default ([`PreciseBnWhen::Unconverged`]) it runs only before an evaluation whose running
//! statistics have not converged: a short run reports what its network learned, while the seed's
//! recipe (15,000 steps) is evaluated from its own moving averages from epoch 8 on, and by its last
//! epoch the values recomputed in epochs 1 to 7 weigh less than 1e-17 in them.

use cifar_data::Batch;
use clap::ValueEnum;
use nn_layers::{into_device, ForwardCtx};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::TrainBatches;
use crate::model::ResNet;

/// Training batches precise batch norm averages over by default (12,500 images at the seed's
/// batch of 250; at most an epoch's).
pub const DEFAULT_BATCHES: u64 = 50;

/// The running statistics count as converged when their initial values weigh at most this (module
/// doc).
pub const CONVERGED_WEIGHT: f64 = 0.01;

/// When precise batch norm recomputes the statistics before an evaluation (`--precise-bn-when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreciseBnWhen {
    /// Only while the moving averages have not converged (their initial values weigh more than
    /// 1%).
    #[default]
    Unconverged,
    /// Before every evaluation.
    Always,
}

/// The weight the running statistics still give their initial values after `steps` training
/// steps at batch-norm momentum `momentum`: momentum^steps.
pub fn initial_weight(momentum: f64, steps: u64) -> f64 {
    momentum.powf(steps as f64)
}

/// The running statistics an evaluation normalises with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BnStatistics {
    /// Training's moving averages, in which the initial values weigh at most `initial_weight`.
    Running { initial_weight: f64 },
    /// Recomputed over `batches` training batches just before.
    Recomputed { batches: usize },
}

impl BnStatistics {
    /// Whether the evaluation can be trusted to show what the network learned.
    pub fn converged(self) -> bool {
        match self {
            BnStatistics::Running { initial_weight } => initial_weight <= CONVERGED_WEIGHT,
            BnStatistics::Recomputed { .. } => true,
        }
    }

    /// What an epoch line says about them: nothing for converged moving averages.
    pub fn note(self) -> Option<String> {
        match self {
            BnStatistics::Recomputed { batches } => {
                Some(format!("BN statistics recomputed over {batches} batches"))
            }
            BnStatistics::Running { initial_weight } if !self.converged() => Some(format!(
                "WARNING BN statistics not converged (initial values weigh {:.0}%): the test \
                 figures understate the network; see --precise-bn",
                100.0 * initial_weight
            )),
            BnStatistics::Running { .. } => None,
        }
    }
}

/// A run's precise batch norm: how many batches, when, and the momentum of its batch norms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreciseBn {
    /// Batches averaged over; 0 never recomputes.
    pub batches: u64,
    pub when: PreciseBnWhen,
    pub momentum: f64,
}

impl PreciseBn {
    /// The policy of `cfg`.
    pub fn new(cfg: &TrainConfig) -> PreciseBn {
        PreciseBn {
            batches: cfg.run.precise_bn,
            when: cfg.run.precise_bn_when,
            momentum: cfg.regularization.bn_momentum,
        }
    }

    /// Whether to recompute before the evaluation after `step` steps.
    pub fn due(&self, step: u64) -> bool {
        let unconverged = initial_weight(self.momentum, step) > CONVERGED_WEIGHT;
        self.batches > 0 && (self.when == PreciseBnWhen::Always || unconverged)
    }

    /// Before the evaluation after `step` steps, in epoch `epoch` of `batches`: recomputes the
    /// statistics when [`PreciseBn::due`], over the epoch's first batches; returns the statistics
    /// the evaluation will use.
    ///
    /// # Errors
    /// A batch that cannot be built, or a forward error.
    pub fn prepare(
        &self,
        model: &mut ResNet,
        batches: &TrainBatches,
        epoch: u64,
        step: u64,
    ) -> anyhow::Result<BnStatistics> {
        if !self.due(step) {
            return Ok(BnStatistics::Running {
                initial_weight: initial_weight(self.momentum, step),
            });
        }
        let n = self.batches.min(batches.per_epoch()) as usize;
        let done = recompute(model, batches.epoch(epoch, 0)?.take(n))?;
        Ok(BnStatistics::Recomputed { batches: done })
    }
}

/// Sets the running statistics of every batch norm of `model` to their mean over `batches`: a
/// forward pass per batch in [`Mode::RecomputeStats`](nn_layers::Mode::RecomputeStats), the k-th
/// averaging with the k before it. Returns the number of batches (0 leaves the statistics as they
/// were).
///
/// # Errors
/// A batch that failed to build, or a forward error.
pub fn recompute(
    model: &mut ResNet,
    batches: impl Iterator<Item = cifar_data::Result<Batch>>,
) -> anyhow::Result<usize> {
    let device = model.device();
    let mut done = 0;
    for batch in batches {
        let x = into_device(batch?.images, device)?;
        model.forward(x, ForwardCtx::recompute_stats(done as u32))?;
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_statistics_converge_after_1533_steps() {
        let seed = PreciseBn {
            batches: DEFAULT_BATCHES,
            when: PreciseBnWhen::Unconverged,
            momentum: 0.997,
        };
        assert!((initial_weight(0.997, 200) - 0.548).abs() < 1e-3);
        assert!(seed.due(1532) && !seed.due(1533));
        // Evaluations after epochs 1 to 7 of 200 steps recompute, from epoch 8 on they do not.
        let due: Vec<bool> = (1..=9).map(|e| seed.due(200 * e)).collect();
        assert_eq!(
            due,
            [true, true, true, true, true, true, true, false, false]
        );
        assert!(!PreciseBn { batches: 0, ..seed }.due(1));
        let always = PreciseBn {
            when: PreciseBnWhen::Always,
            ..seed
        };
        assert!(always.due(1_000_000));
        // The quick start's momentum 0.9 converges within its first epoch of 100 steps.
        assert!(!PreciseBn {
            momentum: 0.9,
            ..seed
        }
        .due(100));
    }

    #[test]
    fn only_unconverged_running_statistics_are_flagged() {
        let stale = BnStatistics::Running {
            initial_weight: 0.9,
        };
        assert!(!stale.converged());
        assert!(stale
            .note()
            .unwrap()
            .contains("not converged (initial values weigh 90%)"));
        let fresh = BnStatistics::Running {
            initial_weight: 0.005,
        };
        assert!(fresh.converged() && fresh.note().is_none());
        let recomputed = BnStatistics::Recomputed { batches: 6 };
        assert!(recomputed.converged());
        assert_eq!(
            recomputed.note().unwrap(),
            "BN statistics recomputed over 6 batches"
        );
    }
}

//! Learning-rate and DropBlock keep-probability schedules: pure functions of the step or epoch, so
//! a resumed run recomputes them instead of storing them.

use std::f64::consts::PI;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// How the learning rate moves over training (`--schedule`; the formulas are
/// [`LrSchedule::lr`]'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The seed's staircase: multiplied by --lr-decay after every epoch.
    Seed,
    /// Divided by 10 at half of the epochs and again at three quarters.
    Step,
    /// Cosine annealing to 0 over the run.
    Cosine,
}

/// The learning rate at every step, with an optional linear warm-up in front.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// The rate after warm-up, before any decay.
    pub base_lr: f64,
    /// Per-epoch factor of [`ScheduleKind::Seed`] (0.98 in the seed).
    pub decay: f64,
    pub steps_per_epoch: u64,
    pub epochs: u64,
    /// Steps of linear warm-up from `base_lr / warmup_steps` to `base_lr`; 0 for none.
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// The learning rate used for the update of step `step` (counted from 0), with
    /// spe = `steps_per_epoch` and `epoch = floor(step / spe)`:
    /// - during warm-up (`step < warmup_steps`): `base_lr * (step + 1) / warmup_steps`;
    /// - [`ScheduleKind::Seed`]: `base_lr * decay^epoch`;
    /// - [`ScheduleKind::Step`]: `base_lr`, then `base_lr / 10` from half of the epochs,
    ///   `base_lr / 100` from three quarters;
    /// - [`ScheduleKind::Cosine`]: `base_lr * (1 + cos(pi t)) / 2`, t going from 0 to 1 over the
    ///   steps after warm-up.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let spe = self.steps_per_epoch.max(1);
        let total = (self.epochs * spe).max(1);
        match self.kind {
            ScheduleKind::Seed => self.base_lr * self.decay.powi((step / spe) as i32),
            ScheduleKind::Step => {
                let epoch = step / spe;
                let factor = if 4 * epoch >= 3 * self.epochs {
                    0.01
                } else if 2 * epoch >= self.epochs {
                    0.1
                } else {
                    1.0
                };
                self.base_lr * factor
            }
            ScheduleKind::Cosine => {
                let after = total.saturating_sub(self.warmup_steps).max(1);
                let t = (step - self.warmup_steps).min(after) as f64 / after as f64;
                self.base_lr * 0.5 * (1.0 + (PI * t).cos())
            }
        }
    }
}

/// DropBlock's keep probability per epoch: `start`, lowered by `step` after each epoch, never below
/// `end` (the seed: 1.0 down to 0.80 by 0.005).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepSchedule {
    pub start: f64,
    pub end: f64,
    pub step: f64,
}

impl KeepSchedule {
    /// The keep probability during epoch `epoch` (counted from 0).
    pub fn keep(&self, epoch: u64) -> f32 {
        // Rounded to 1e-9 so that 1.0 - 40 * 0.005 lands exactly on 0.8 rather than just below.
        let raw = ((self.start - self.step * epoch as f64) * 1e9).round() / 1e9;
        raw.max(self.end).min(1.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup_steps: u64) -> LrSchedule {
        LrSchedule {
            kind,
            base_lr: 5e-4,
            decay: 0.98,
            steps_per_epoch: 200,
            epochs: 75,
            warmup_steps,
        }
    }

    #[test]
    fn seed_schedule_is_a_staircase_per_epoch() {
        let s = sched(ScheduleKind::Seed, 0);
        assert_eq!(s.lr(0), 5e-4);
        assert_eq!(s.lr(199), 5e-4);
        assert!((s.lr(200) - 5e-4 * 0.98).abs() < 1e-15);
        assert!((s.lr(200 * 10 + 7) - 5e-4 * 0.98f64.powi(10)).abs() < 1e-15);
    }

    #[test]
    fn step_schedule_drops_tenfold_twice() {
        let s = sched(ScheduleKind::Step, 0);
        assert_eq!(s.lr(200 * 37), 5e-4);
        assert!((s.lr(200 * 38) - 5e-5).abs() < 1e-15);
        assert!((s.lr(200 * 57) - 5e-6).abs() < 1e-15);
    }

    #[test]
    fn cosine_goes_from_base_to_zero_after_warmup() {
        let s = sched(ScheduleKind::Cosine, 100);
        assert!((s.lr(0) - 5e-6).abs() < 1e-15);
        assert!((s.lr(99) - 5e-4).abs() < 1e-15);
        assert!((s.lr(100) - 5e-4).abs() < 1e-15);
        let end = s.lr(75 * 200 - 1);
        assert!((0.0..1e-8).contains(&end));
        let mid = s.lr(100 + (75 * 200 - 100) / 2);
        assert!((mid - 2.5e-4).abs() < 1e-6);
    }

    #[test]
    fn keep_probability_follows_the_seed() {
        let k = KeepSchedule {
            start: 1.0,
            end: 0.8,
            step: 0.005,
        };
        assert_eq!(k.keep(0), 1.0);
        assert_eq!(k.keep(1), 0.995);
        assert_eq!(k.keep(40), 0.8);
        assert_eq!(k.keep(74), 0.8);
    }
}

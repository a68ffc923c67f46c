//! A run's checkpoints: where it starts ([`Start`]: fresh, `--resume`, `--init`) and what it
//! saves ([`Checkpoints`]): `last.safetensors` after every epoch, during one as
//! `--checkpoint-every` asks, and when the run stops early; `best.safetensors` a copy of the last
//! whose test top-1 is the best of the run so far.
//! What a checkpoint holds is [`crate::state`]'s.
//!
//! `last.safetensors` is what the seed reported (its 70.7% is the last epoch's). `best` is chosen
//! on the test set, so its test accuracy is an optimistic estimate of the network's: the run's
//! output and the README say so wherever it appears.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::metrics::EpochRecord;
use crate::model::ResNet;
use crate::optim::Optimizer;
use crate::state::{self, RunState};

/// Checkpoint file names in the run directory.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";

/// Where a run's weights and position come from.
#[derive(Debug)]
pub enum Start {
    /// A fresh initialisation from the run's seed.
    Fresh,
    /// `--resume`: the checkpoint's weights, optimizer state and position.
    Resume {
        path: PathBuf,
        loaded: Box<state::Loaded>,
    },
    /// `--init`: the checkpoint's weights only, with a fresh optimizer and schedule.
    Init(PathBuf),
}

impl Start {
    /// `--resume path`, read now, with the settings the run continues with: those it was saved
    /// with, but for its length (epochs, step limit), the device, the threads and how often it
    /// checkpoints, which come from `cfg` (this command line).
    ///
    /// # Errors
    /// A checkpoint that cannot be read, naming the flag and the file.
    pub fn resume(path: &Path, cfg: &TrainConfig) -> anyhow::Result<(Start, TrainConfig)> {
        let loaded = state::load(path)
            .with_context(|| format!("--resume {}: cannot read the checkpoint", path.display()))?;
        let mut saved = loaded.config.clone();
        saved.run.epochs = cfg.run.epochs;
        saved.run.max_steps = cfg.run.max_steps;
        saved.run.device = cfg.run.device;
        saved.run.threads = cfg.run.threads;
        saved.run.checkpoint_every = cfg.run.checkpoint_every;
        eprintln!(
            "resuming {} at step {}, epoch {} (batch {}), with its saved settings",
            path.display(),
            loaded.state.step,
            loaded.state.epoch + 1,
            loaded.state.batch_in_epoch
        );
        let start = Start::Resume {
            path: path.to_path_buf(),
            loaded: Box::new(loaded),
        };
        Ok((start, saved))
    }

    /// Loads the start into `model`, still on the CPU, and for a resume into `optimizer`;
    /// returns the resumed run's position (`None` for a run that starts at step 0).
    ///
    /// # Errors
    /// A checkpoint trained on another number of classes than `class_names`, or whose tensors
    /// do not fit the model.
    pub fn restore(
        self,
        model: &mut ResNet,
        optimizer: &mut Optimizer,
        class_names: &[String],
    ) -> anyhow::Result<Option<RunState>> {
        match self {
            Start::Fresh => Ok(None),
            Start::Resume { path, loaded } => {
                check_classes(&path, &loaded.class_names, class_names)?;
                state::load_weights(&path, &loaded.checkpoint, model)?;
                state::load_optimizer(&path, &loaded.checkpoint, model, optimizer)?;
                Ok(Some(loaded.state))
            }
            Start::Init(path) => {
                let loaded = state::load(&path).with_context(|| {
                    format!("--init {}: cannot read the checkpoint", path.display())
                })?;
                check_classes(&path, &loaded.class_names, class_names)?;
                state::load_weights(&path, &loaded.checkpoint, model)
                    .with_context(|| format!("--init {}", path.display()))?;
                eprintln!("initialised the weights from {}", path.display());
                Ok(None)
            }
        }
    }
}

/// A checkpoint trained on other classes cannot continue on this dataset.
fn check_classes(path: &Path, saved: &[String], data: &[String]) -> anyhow::Result<()> {
    if saved.len() != data.len() {
        bail!(
            "{}: the checkpoint has {} classes, the dataset {}",
            path.display(),
            saved.len(),
            data.len()
        );
    }
    Ok(())
}

/// The epoch `best.safetensors` holds: chosen on the test set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestEpoch {
    /// Counted from 1.
    pub epoch: u64,
    pub test_top1: f64,
}

/// The checkpoints of one run directory, written with the run's settings and class names.
#[derive(Debug)]
pub struct Checkpoints<'a> {
    dir: PathBuf,
    cfg: &'a TrainConfig,
    class_names: &'a [String],
    /// The finished epoch with the best test top-1 so far (the first of equals).
    best: Option<BestEpoch>,
    /// When `last.safetensors` was last written (or the run started), for `--checkpoint-every`.
    saved_at: Instant,
}

impl<'a> Checkpoints<'a> {
    /// The checkpoints of the run in `dir`, whose finished epochs so far are `history` (a resumed
    /// run's `metrics.csv`): the best of them is the one to beat.
    pub fn new(
        dir: &Path,
        cfg: &'a TrainConfig,
        class_names: &'a [String],
        history: &[EpochRecord],
    ) -> Checkpoints<'a> {
        let mut best: Option<BestEpoch> = None;
        for r in history {
            if best.is_none_or(|b| r.test_top1 > b.test_top1) {
                best = Some(BestEpoch {
                    epoch: r.epoch,
                    test_top1: r.test_top1,
                });
            }
        }
        Checkpoints {
            dir: dir.to_path_buf(),
            cfg,
            class_names,
            best,
            saved_at: Instant::now(),
        }
    }

    /// The epoch `best.safetensors` holds, if an epoch finished.
    pub fn best(&self) -> Option<BestEpoch> {
        self.best
    }

    /// Whether `--checkpoint-every` asks for `last.safetensors` after step `step` of the run.
    pub fn due(&self, step: u64) -> bool {
        self.cfg
            .run
            .checkpoint_every
            .due(step, self.saved_at.elapsed())
    }

    /// The path of `last.safetensors`.
    pub fn last(&self) -> PathBuf {
        self.dir.join(LAST_CHECKPOINT)
    }

    /// Writes the model, the optimizer and the run's position `st` to `last.safetensors`,
    /// atomically.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_last(
        &mut self,
        model: &mut ResNet,
        optimizer: &mut Optimizer,
        st: &RunState,
    ) -> anyhow::Result<()> {
        let (cfg, names) = (self.cfg, self.class_names);
        state::save(&self.last(), model, Some(optimizer), cfg, names, st)?;
        self.saved_at = Instant::now();
        Ok(())
    }

    /// After an epoch whose test top-1 was `top1` (`st` has ended it): `last.safetensors`, copied
    /// (atomically) to `best.safetensors` when `top1` is the best so far.
    ///
    /// # Errors
    /// A file cannot be written or copied.
    pub fn save_epoch(
        &mut self,
        model: &mut ResNet,
        optimizer: &mut Optimizer,
        st: &RunState,
        top1: f64,
    ) -> anyhow::Result<()> {
        self.save_last(model, optimizer, st)?;
        if self.best.is_none_or(|b| top1 > b.test_top1) {
            self.best = Some(BestEpoch {
                epoch: st.epoch,
                test_top1: top1,
            });
            let (last, best) = (self.last(), self.dir.join(BEST_CHECKPOINT));
            checkpoint::copy(&last, &best)
                .with_context(|| format!("copying {} to {}", last.display(), best.display()))?;
        }
        Ok(())
    }

    /// What a diverged run's error adds: where its last good checkpoint is.
    pub fn diverged_note(&self) -> String {
        format!(
            "training diverged; the last good checkpoint (if any) is {}",
            self.last().display()
        )
    }
}

//! A training run's settings, as one serialisable [`TrainConfig`]: built from the `train` flags,
//! validated, and saved as `config.toml` in the run directory (and in checkpoints' metadata) so a
//! run can be inspected, repeated and resumed with the same settings.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::{
    AugmentKind, DatasetKind, DeviceArg, OptimizerKind, Preset, ScheduleKind, TrainArgs,
};
use crate::error::{Error, Result};

/// File name of the settings in a run directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Every setting of a training run. Tables of `config.toml`: `[data]`, `[model]`, `[optimizer]`
/// (with `[optimizer.rule]`), `[regularization]`, `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    pub regularization: RegularizationConfig,
    pub run: RunConfig,
}

/// Where the images come from and how training images are augmented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// The dataset directory; absent for the synthetic dataset generated in memory.
    pub dir: Option<PathBuf>,
    /// Size and seed of the generated synthetic dataset (used when `dir` is absent).
    pub synth_train: usize,
    pub synth_test: usize,
    pub synth_seed: u64,
    pub augment: AugmentKind,
}

/// The network's size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The preset the sizes came from (widths and hidden may override it).
    pub preset: Preset,
    /// Channel widths of the four residual blocks.
    pub widths: [usize; 4],
    /// Features of the two hidden fully-connected layers.
    pub hidden: usize,
}

/// The learning rate, its schedule, clipping and the update rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub lr: f64,
    /// Per-epoch factor of [`ScheduleKind::Seed`].
    pub lr_decay: f64,
    pub schedule: ScheduleKind,
    pub warmup_epochs: u64,
    /// Global L2 norm gradients are clipped to.
    pub clip_norm: f64,
    /// Last: TOML writes sub-tables after plain values.
    pub rule: UpdateRule,
}

/// The update rule with its own hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpdateRule {
    /// Adam, TensorFlow 1 form.
    Adam {
        beta1: f64,
        beta2: f64,
        epsilon: f64,
    },
    /// SGD with momentum; `weight_decay` is L2 added to the gradient.
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
}

impl UpdateRule {
    pub fn kind(&self) -> OptimizerKind {
        match self {
            UpdateRule::Adam { .. } => OptimizerKind::Adam,
            UpdateRule::Sgd { .. } => OptimizerKind::Sgd,
        }
    }
}

/// Dropout, DropBlock and batch norm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegularizationConfig {
    /// Keep probability of the dropout after the two hidden FC layers.
    pub dropout_keep: f64,
    pub dropblock_size: usize,
    /// DropBlock keep probability: `start`, lowered by `step` after each epoch, never below `end`.
    pub dropblock_keep_start: f64,
    pub dropblock_keep_end: f64,
    pub dropblock_keep_step: f64,
    pub bn_momentum: f64,
    pub bn_epsilon: f64,
}

/// Length of the run, batches, seeds, evaluation, logging and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub epochs: u64,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub seed: u64,
    /// Total optimizer steps at most; absent for no limit.
    pub max_steps: Option<u64>,
    /// Epochs of rising test loss before stopping; 0 never stops early.
    pub patience: u64,
    /// Evaluate on the whole training set after each epoch.
    pub eval_train: bool,
    pub log_every: u64,
    pub device: DeviceArg,
    /// CPU threads; absent for one per core.
    pub threads: Option<usize>,
}

/// `Ok` when `ok`, else an error "`flag` `rule`, got `value`".
pub(crate) fn check(ok: bool, flag: &str, rule: &str, value: impl Display) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid setting",
            format!("{flag} {rule}, got {value}"),
        ))
    }
}

/// `value` is a finite number greater than 0.
fn positive(value: f64, flag: &str) -> Result<()> {
    check(
        value.is_finite() && value > 0.0,
        flag,
        "must be a finite number > 0",
        value,
    )
}

/// `value` is a probability in (0, 1].
fn keep_probability(value: f64, flag: &str) -> Result<()> {
    check(
        value > 0.0 && value <= 1.0,
        flag,
        "must be a probability in (0, 1]",
        value,
    )
}

/// `value` is in [0, 1): a momentum or an Adam beta.
fn unit_interval(value: f64, flag: &str) -> Result<()> {
    check(
        (0.0..1.0).contains(&value),
        flag,
        "must be in [0, 1)",
        value,
    )
}

impl TrainConfig {
    /// The settings the `train` flags describe, validated. Refuses flags of the other update rule
    /// (`--momentum` with Adam, `--adam-beta1` with SGD, ...) rather than ignoring them.
    pub fn from_args(a: &TrainArgs) -> Result<TrainConfig> {
        let rule = match a.optimizer {
            OptimizerKind::Adam => {
                for (given, flag) in [
                    (a.momentum.is_some(), "--momentum"),
                    (a.nesterov, "--nesterov"),
                    (a.weight_decay.is_some(), "--weight-decay"),
                ] {
                    check(
                        !given,
                        flag,
                        "applies to --optimizer sgd only",
                        "--optimizer adam",
                    )?;
                }
                UpdateRule::Adam {
                    beta1: a.adam_beta1.unwrap_or(0.9),
                    beta2: a.adam_beta2.unwrap_or(0.999),
                    epsilon: a.adam_epsilon.unwrap_or(1e-8),
                }
            }
            OptimizerKind::Sgd => {
                for (given, flag) in [
                    (a.adam_beta1.is_some(), "--adam-beta1"),
                    (a.adam_beta2.is_some(), "--adam-beta2"),
                    (a.adam_epsilon.is_some(), "--adam-epsilon"),
                ] {
                    check(
                        !given,
                        flag,
                        "applies to --optimizer adam only",
                        "--optimizer sgd",
                    )?;
                }
                UpdateRule::Sgd {
                    momentum: a.momentum.unwrap_or(0.9),
                    nesterov: a.nesterov,
                    weight_decay: a.weight_decay.unwrap_or(5e-4),
                }
            }
        };
        let config = TrainConfig {
            data: DataConfig {
                dataset: a.data.dataset(),
                dir: a.data.data.clone(),
                synth_train: a.data.synth_train,
                synth_test: a.data.synth_test,
                synth_seed: a.data.synth_seed,
                augment: a.augment,
            },
            model: ModelConfig {
                preset: a.model.preset,
                widths: a.model.widths()?,
                hidden: a.model.hidden()?,
            },
            optimizer: OptimizerConfig {
                lr: a.lr,
                lr_decay: a.lr_decay,
                schedule: a.schedule,
                warmup_epochs: a.warmup_epochs,
                clip_norm: a.clip_norm,
                rule,
            },
            regularization: RegularizationConfig {
                dropout_keep: a.dropout_keep,
                dropblock_size: a.dropblock_size,
                dropblock_keep_start: a.dropblock_keep_start,
                dropblock_keep_end: a.dropblock_keep_end,
                dropblock_keep_step: a.dropblock_keep_step,
                bn_momentum: a.bn_momentum,
                bn_epsilon: a.bn_epsilon,
            },
            run: RunConfig {
                epochs: a.epochs,
                batch_size: a.batch_size,
                eval_batch_size: a.eval_batch_size,
                seed: a.seed,
                max_steps: a.max_steps,
                patience: a.patience,
                eval_train: a.eval_train,
                log_every: a.log_every,
                device: a.runtime.device,
                threads: a.runtime.threads,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses values out of range, naming the flag that sets each one.
    pub fn validate(&self) -> Result<()> {
        let run = &self.run;
        check(run.epochs > 0, "--epochs", "must be at least 1", run.epochs)?;
        check(
            run.batch_size > 0,
            "--batch-size",
            "must be at least 1",
            run.batch_size,
        )?;
        check(
            run.eval_batch_size > 0,
            "--eval-batch-size",
            "must be at least 1",
            run.eval_batch_size,
        )?;
        if let Some(n) = run.max_steps {
            check(n > 0, "--max-steps", "must be at least 1", n)?;
        }
        check(
            run.log_every > 0,
            "--log-every",
            "must be at least 1",
            run.log_every,
        )?;
        if let Some(t) = run.threads {
            check(t > 0, "--threads", "must be at least 1", t)?;
        }

        let d = &self.data;
        check(
            d.synth_train > 0,
            "--synth-train",
            "must be at least 1",
            d.synth_train,
        )?;
        check(
            d.synth_test > 0,
            "--synth-test",
            "must be at least 1",
            d.synth_test,
        )?;

        let m = &self.model;
        check(
            m.widths.iter().all(|&w| w > 0),
            "--widths",
            "must all be at least 1",
            format!("{:?}", m.widths),
        )?;
        check(m.hidden > 0, "--hidden", "must be at least 1", m.hidden)?;

        let o = &self.optimizer;
        positive(o.lr, "--lr")?;
        check(
            o.lr_decay > 0.0 && o.lr_decay <= 1.0,
            "--lr-decay",
            "must be in (0, 1]",
            o.lr_decay,
        )?;
        check(o.clip_norm > 0.0, "--clip-norm", "must be > 0", o.clip_norm)?;
        check(
            o.warmup_epochs < self.run.epochs,
            "--warmup-epochs",
            "must be fewer than --epochs",
            o.warmup_epochs,
        )?;
        match o.rule {
            UpdateRule::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                unit_interval(beta1, "--adam-beta1")?;
                unit_interval(beta2, "--adam-beta2")?;
                positive(epsilon, "--adam-epsilon")?;
            }
            UpdateRule::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                unit_interval(momentum, "--momentum")?;
                check(
                    weight_decay.is_finite() && weight_decay >= 0.0,
                    "--weight-decay",
                    "must be a finite number >= 0",
                    weight_decay,
                )?;
                check(
                    !nesterov || momentum > 0.0,
                    "--nesterov",
                    "needs --momentum > 0",
                    momentum,
                )?;
            }
        }

        let r = &self.regularization;
        keep_probability(r.dropout_keep, "--dropout-keep")?;
        check(
            r.dropblock_size > 0,
            "--dropblock-size",
            "must be at least 1",
            r.dropblock_size,
        )?;
        keep_probability(r.dropblock_keep_start, "--dropblock-keep-start")?;
        keep_probability(r.dropblock_keep_end, "--dropblock-keep-end")?;
        check(
            r.dropblock_keep_end <= r.dropblock_keep_start,
            "--dropblock-keep-end",
            &format!(
                "must not exceed --dropblock-keep-start ({})",
                r.dropblock_keep_start
            ),
            r.dropblock_keep_end,
        )?;
        check(
            r.dropblock_keep_step.is_finite() && r.dropblock_keep_step >= 0.0,
            "--dropblock-keep-step",
            "must be a finite number >= 0",
            r.dropblock_keep_step,
        )?;
        unit_interval(r.bn_momentum, "--bn-momentum")?;
        positive(r.bn_epsilon, "--bn-epsilon")?;

        Ok(())
    }

    /// The settings as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::invalid("config to TOML", e.to_string()))
    }

    /// Parses and validates settings from TOML text; `origin` names where the text came from
    /// (a file, or a checkpoint's metadata) in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<TrainConfig> {
        let config: TrainConfig =
            toml::from_str(text).map_err(|e| Error::format(origin, e.to_string()))?;
        config
            .validate()
            .map_err(|e| Error::format(origin, e.to_string()))?;
        Ok(config)
    }

    /// Writes the settings to `path` (normally `RUN_DIR/config.toml`).
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_toml()?).map_err(|e| Error::io(path, e))
    }

    /// Reads and validates settings written by [`TrainConfig::save`].
    pub fn load(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        TrainConfig::from_toml(&text, path)
    }
}

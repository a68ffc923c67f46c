//! A training run's settings, as one serialisable [`TrainConfig`], and their validation: the
//! one place that says which values are allowed. The `train` flags become a `TrainConfig` through
//! [`crate::cli::TrainArgs::config`]; the run saves it as `config.toml` in the run directory (and
//! in checkpoints' metadata), so a run can be inspected, repeated and resumed with the same
//! settings. Every refusal names the flag that sets the value.
//!
//! The choices are enums shared by the command line and `config.toml` (clap's `ValueEnum` and
//! serde on one type): [`DatasetKind`], [`Preset`], [`AugmentKind`], [`PreprocessKind`],
//! [`OrderKind`], [`DeviceArg`], [`PrecisionKind`] here, [`OptimizerKind`] and [`UpdateRule`] with the optimizer,
//! [`ScheduleKind`] with the schedules, [`PreciseBnWhen`] with precise batch norm.
//!
//! Settings added after the first release (`preprocess`, `order`, `precise_bn`,
//! `precise_bn_when`, `precision`) have serde defaults, so a `config.toml` or checkpoint written before them
//! still loads: `preprocess` then means none (those runs did not sharpen), `order` fixed, and
//! precise batch norm takes today's defaults (it changes no weight).

use std::fmt::{self, Display};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::{OptimizerKind, UpdateRule};
use crate::precise_bn::PreciseBnWhen;
use crate::schedule::ScheduleKind;

/// File name of the settings in a run directory.
pub const CONFIG_FILE: &str = "config.toml";

/// Which dataset to train or evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// The CIFAR-100 binary release (100 fine classes).
    Cifar100,
    /// The CIFAR-10 binary release (10 classes).
    Cifar10,
    /// Procedurally drawn images in the CIFAR-100 layout: generated in memory, or read from the
    /// directory `trainer synth` wrote when --data is given.
    Synthetic,
}

/// A network size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The seed exactly: widths 128/256/512/1024, FC 4096 (77.8 million parameters).
    Seed,
    /// A CPU-friendly size: widths 32/64/128/256, FC 512.
    Small,
    /// A network for tests: widths 8/16/32/64, FC 128.
    Tiny,
}

impl Preset {
    /// Channel widths of the four residual blocks.
    pub fn widths(self) -> [usize; 4] {
        match self {
            Preset::Seed => [128, 256, 512, 1024],
            Preset::Small => [32, 64, 128, 256],
            Preset::Tiny => [8, 16, 32, 64],
        }
    }

    /// Features of the two hidden fully-connected layers.
    pub fn hidden(self) -> usize {
        match self {
            Preset::Seed => 4096,
            Preset::Small => 512,
            Preset::Tiny => 128,
        }
    }
}

/// Training-set augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AugmentKind {
    /// The seed's policy: a random subset of crop-and-resize, flip and coarse dropout.
    Seed,
    /// The common CIFAR policy: pad 4, random 32x32 crop, horizontal flip.
    Standard,
    /// No augmentation.
    None,
}

impl From<AugmentKind> for cifar_data::Augment {
    fn from(a: AugmentKind) -> Self {
        match a {
            AugmentKind::Seed => cifar_data::Augment::Seed,
            AugmentKind::Standard => cifar_data::Augment::Standard,
            AugmentKind::None => cifar_data::Augment::None,
        }
    }
}

/// What is done to every image once, before augmentation (`--sharpen on|off`); written in
/// `config.toml` as [`cifar_data::Preprocess::name`] spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreprocessKind {
    /// The images as the files store them (and what a configuration without the field means).
    #[default]
    None,
    /// The seed's 5x5 unsharp mask, on the training and the test images (SPEC "Preprocessing").
    Sharpen,
}

impl From<PreprocessKind> for cifar_data::Preprocess {
    fn from(p: PreprocessKind) -> Self {
        match p {
            PreprocessKind::None => cifar_data::Preprocess::None,
            PreprocessKind::Sharpen => cifar_data::Preprocess::Sharpen,
        }
    }
}

/// A flag that is on or off (`--sharpen on|off`, `--eval-train on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// The order training images are visited in (`--order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderKind {
    /// The seed's: one seeded shuffle, then the same order every epoch.
    #[default]
    Fixed,
    /// A new seeded shuffle every epoch.
    Shuffle,
}

impl From<OrderKind> for cifar_data::Order {
    fn from(o: OrderKind) -> Self {
        match o {
            OrderKind::Fixed => cifar_data::Order::Fixed,
            OrderKind::Shuffle => cifar_data::Order::Shuffle,
        }
    }
}

/// `--device`: `auto`, `cpu`, `cuda` (ordinal 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceArg {
    /// The GPU when one is usable, the CPU otherwise.
    #[default]
    Auto,
    /// A fixed device.
    Fixed(tensor_core::Device),
}

impl DeviceArg {
    /// The device to run on, given whether a CUDA GPU is usable in this process.
    pub fn resolve(self, cuda_available: bool) -> tensor_core::Device {
        match self {
            DeviceArg::Auto if cuda_available => tensor_core::Device::Cuda(0),
            DeviceArg::Auto => tensor_core::Device::Cpu,
            DeviceArg::Fixed(d) => d,
        }
    }
}

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceArg::Auto),
            _ => s
                .parse::<tensor_core::Device>()
                .map(DeviceArg::Fixed)
                .map_err(|e| format!("{e} (or auto)")),
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Auto => write!(f, "auto"),
            DeviceArg::Fixed(d) => write!(f, "{d}"),
        }
    }
}

impl From<DeviceArg> for String {
    fn from(d: DeviceArg) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for DeviceArg {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// `--precision`: the number format of the convolution and linear products' operands
/// ([`kernels::precision::Precision`]); weights, optimizer state, batch norm, the loss and the
/// gradient norm are FP32 in every mode. A configuration without the field means `fp32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionKind {
    /// The FP32 kernels, on every device.
    #[default]
    Fp32,
    /// Tensor cores with operands rounded to TF32, FP32 accumulation (CUDA, sm_80 or newer).
    Tf32,
    /// BF16 copies of the operands, FP32 accumulation: tensor cores (CUDA, sm_80 or newer), or
    /// on a CPU with AVX-512 BF16 `vdpbf16ps` convolutions (the linear layers' products in FP32
    /// on operands rounded to BF16).
    Bf16,
}

impl From<PrecisionKind> for kernels::precision::Precision {
    fn from(p: PrecisionKind) -> Self {
        use kernels::precision::Precision;
        match p {
            PrecisionKind::Fp32 => Precision::Fp32,
            PrecisionKind::Tf32 => Precision::Tf32,
            PrecisionKind::Bf16 => Precision::Bf16,
        }
    }
}

impl PrecisionKind {
    /// `Err` naming the flag unless `device` runs this mode: tf32 needs a CUDA GPU of compute
    /// capability 8.0 or newer (or the emulated device); bf16 that, or a CPU with AVX-512 BF16.
    ///
    /// # Errors
    /// As above, naming the mode and the device (a GPU by its compute capability).
    pub fn check_device(self, device: tensor_core::Device) -> Result<()> {
        let precision = kernels::precision::Precision::from(self);
        let mode = precision.name();
        let hint = match (self, device) {
            (PrecisionKind::Tf32, tensor_core::Device::Cpu) => {
                "use --device cuda or --precision fp32"
            }
            _ => "use --precision fp32",
        };
        precision.check_device(device).map_err(|e| {
            let why = match e {
                kernels::Error::Invalid { msg, .. } => msg,
                other => other.to_string(),
            };
            Error::invalid(
                "invalid setting",
                format!("--precision {mode} on --device {device}: {why}; {hint}"),
            )
        })
    }
}

/// `--checkpoint-every`: how often `last.safetensors` is also written in the middle of an epoch
/// (it is always written at an epoch's end and when the run stops). On the command line and in
/// `config.toml`: `90s`, `10m`, `2h` (wall-clock time since the last checkpoint), `500steps` or
/// `500` (every 500 optimizer steps of the run), or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CheckpointEvery {
    /// After the first step that ends this long after the last checkpoint was written.
    Time(Duration),
    /// After every step whose number (counted over the run, from 1) is a multiple of this.
    Steps(u64),
    /// Only at epoch ends and when the run stops.
    Off,
}

impl CheckpointEvery {
    /// The default: ten minutes, which bounds what a kill loses to ten minutes of training
    /// while the writes cost well under 1% of the time even for the seed network (a 0.9 GB
    /// checkpoint of weights and Adam state; see the README).
    pub const DEFAULT: CheckpointEvery = CheckpointEvery::Time(Duration::from_secs(600));

    /// Whether a checkpoint is due after step `step` of the run (counted from 1), the last one
    /// having been written `since` ago.
    pub fn due(self, step: u64, since: Duration) -> bool {
        match self {
            CheckpointEvery::Time(t) => since >= t,
            CheckpointEvery::Steps(n) => step.is_multiple_of(n),
            CheckpointEvery::Off => false,
        }
    }
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery::DEFAULT
    }
}

impl FromStr for CheckpointEvery {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let syntax = "expected a time (90s, 10m, 2h), a number of steps (500steps or 500) or off";
        if s == "off" {
            return Ok(CheckpointEvery::Off);
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("{s:?}: {syntax}"))?;
        if n == 0 {
            return Err(format!(
                "{s:?}: must be at least 1 (off writes checkpoints only at epoch ends)"
            ));
        }
        let seconds = |per: u64| {
            n.checked_mul(per)
                .map(|t| CheckpointEvery::Time(Duration::from_secs(t)))
                .ok_or_else(|| format!("{s:?}: too long"))
        };
        match unit {
            "" | "steps" => Ok(CheckpointEvery::Steps(n)),
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            _ => Err(format!("{s:?}: {syntax}")),
        }
    }
}

impl fmt::Display for CheckpointEvery {
    /// The form [`FromStr`] reads, times in the largest unit that divides them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CheckpointEvery::Time(t) => {
                let s = t.as_secs();
                match (s % 3600, s % 60) {
                    (0, _) => write!(f, "{}h", s / 3600),
                    (_, 0) => write!(f, "{}m", s / 60),
                    _ => write!(f, "{s}s"),
                }
            }
            CheckpointEvery::Steps(n) => write!(f, "{n}steps"),
            CheckpointEvery::Off => write!(f, "off"),
        }
    }
}

impl From<CheckpointEvery> for String {
    fn from(c: CheckpointEvery) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for CheckpointEvery {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

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

/// Where the images come from, what is done to them once, and how training walks and augments
/// them.
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
    /// Applied to both splits once, at load; `eval` and `predict` apply it too.
    #[serde(default)]
    pub preprocess: PreprocessKind,
    #[serde(default)]
    pub order: OrderKind,
}

/// What a run does to its images, beside where they come from: the part of [`DataConfig`] that
/// `eval` takes from a checkpoint when the dataset comes from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRecipe {
    pub preprocess: PreprocessKind,
    pub order: OrderKind,
    pub augment: AugmentKind,
}

impl DataRecipe {
    /// The seed's: sharpened, one fixed order, the seed's augmentation.
    pub const SEED: DataRecipe = DataRecipe {
        preprocess: PreprocessKind::Sharpen,
        order: OrderKind::Fixed,
        augment: AugmentKind::Seed,
    };
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
    /// Training batches precise batch norm averages its statistics over; 0 never recomputes.
    #[serde(default = "default_precise_bn")]
    pub precise_bn: u64,
    /// When precise batch norm recomputes the statistics before an evaluation.
    #[serde(default)]
    pub precise_bn_when: PreciseBnWhen,
    pub log_every: u64,
    pub device: DeviceArg,
    /// CPU threads; absent for one per core.
    pub threads: Option<usize>,
    /// How often `last.safetensors` is written mid-epoch (absent in configs written before it
    /// existed: the default).
    #[serde(default)]
    pub checkpoint_every: CheckpointEvery,
    /// The products' number format (absent in configs written before it existed: fp32).
    #[serde(default)]
    pub precision: PrecisionKind,
}

fn default_precise_bn() -> u64 {
    crate::precise_bn::DEFAULT_BATCHES
}

/// The update-rule flags as given on the command line: `None` (or `false`) where absent, so that
/// a flag of the other rule is refused rather than ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleFlags {
    pub adam_beta1: Option<f64>,
    pub adam_beta2: Option<f64>,
    pub adam_epsilon: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: bool,
    pub weight_decay: Option<f64>,
}

impl RuleFlags {
    /// The rule `kind` names, its absent hyper-parameters at their defaults (Adam: 0.9, 0.999,
    /// 1e-8; SGD: momentum 0.9, weight decay 5e-4). Their ranges are checked with the rest of the
    /// settings ([`OptimizerConfig::validate`]).
    ///
    /// # Errors
    /// A flag of the other rule (`--momentum` with Adam, `--adam-beta1` with SGD, ...).
    pub fn rule(&self, kind: OptimizerKind) -> Result<UpdateRule> {
        let (others, only) = match kind {
            OptimizerKind::Adam => (
                [
                    (self.momentum.is_some(), "--momentum"),
                    (self.nesterov, "--nesterov"),
                    (self.weight_decay.is_some(), "--weight-decay"),
                ],
                ("applies to --optimizer sgd only", "--optimizer adam"),
            ),
            OptimizerKind::Sgd => (
                [
                    (self.adam_beta1.is_some(), "--adam-beta1"),
                    (self.adam_beta2.is_some(), "--adam-beta2"),
                    (self.adam_epsilon.is_some(), "--adam-epsilon"),
                ],
                ("applies to --optimizer adam only", "--optimizer sgd"),
            ),
        };
        for (given, flag) in others {
            check(!given, flag, only.0, only.1)?;
        }
        Ok(match kind {
            OptimizerKind::Adam => UpdateRule::Adam {
                beta1: self.adam_beta1.unwrap_or(0.9),
                beta2: self.adam_beta2.unwrap_or(0.999),
                epsilon: self.adam_epsilon.unwrap_or(1e-8),
            },
            OptimizerKind::Sgd => UpdateRule::Sgd {
                momentum: self.momentum.unwrap_or(0.9),
                nesterov: self.nesterov,
                weight_decay: self.weight_decay.unwrap_or(5e-4),
            },
        })
    }
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

/// A count (images, steps, batches, threads) of at least 1.
pub(crate) fn at_least_one<T: PartialOrd + Default + Display>(flag: &str, value: T) -> Result<()> {
    let ok = value > T::default();
    check(ok, flag, "must be at least 1", value)
}

/// `--threads`, when given, is at least 1.
pub(crate) fn validate_threads(threads: Option<usize>) -> Result<()> {
    threads.map_or(Ok(()), |t| at_least_one("--threads", t))
}

/// `value` is a finite number greater than 0.
///
/// The kernels read these settings as `f32`, so the value must also be a normal `f32` (from
/// about 1.2e-38 to 3.4e38): 1e-50 would become 0 there and 1e39 infinity.
fn positive(value: f64, flag: &str) -> Result<()> {
    check(
        value > 0.0 && (value as f32).is_normal(),
        flag,
        "must be a finite number > 0 (1.2e-38 to 3.4e38, an f32's range)",
        value,
    )
}

/// `value` is a finite number of at least 0.
fn non_negative(value: f64, flag: &str) -> Result<()> {
    check(
        value.is_finite() && value >= 0.0,
        flag,
        "must be a finite number >= 0",
        value,
    )
}

/// `value` is a probability in (0, 1], and a normal `f32` as the layers read it: a keep
/// probability of 1e-50 would be 0 there (a layer that refuses it), 1e-40 one whose reciprocal,
/// the kept values' scale, is infinite.
fn keep_probability(value: f64, flag: &str) -> Result<()> {
    check(
        value <= 1.0 && (value as f32).is_normal() && value > 0.0,
        flag,
        "must be a probability in (0, 1] (at least 1.2e-38, an f32's smallest normal)",
        value,
    )
}

/// `value` is in [0, 1): a momentum or an Adam beta.
///
/// The kernels read it as an `f32`, which must be below 1 too: 0.999999999 would round to 1.
fn unit_interval(value: f64, flag: &str) -> Result<()> {
    check(
        value >= 0.0 && (value as f32) < 1.0,
        flag,
        "must be in [0, 1) (at most 0.99999994, the largest f32 below 1)",
        value,
    )
}

/// The update rule's hyper-parameters are in range.
fn validate_rule(rule: &UpdateRule) -> Result<()> {
    match *rule {
        UpdateRule::Adam {
            beta1,
            beta2,
            epsilon,
        } => {
            unit_interval(beta1, "--adam-beta1")?;
            unit_interval(beta2, "--adam-beta2")?;
            positive(epsilon, "--adam-epsilon")
        }
        UpdateRule::Sgd {
            momentum,
            nesterov,
            weight_decay,
        } => {
            unit_interval(momentum, "--momentum")?;
            non_negative(weight_decay, "--weight-decay")?;
            check(
                !nesterov || momentum > 0.0,
                "--nesterov",
                "needs --momentum > 0",
                momentum,
            )
        }
    }
}

impl DataConfig {
    /// What the run does to its images.
    pub fn recipe(&self) -> DataRecipe {
        DataRecipe {
            preprocess: self.preprocess,
            order: self.order,
            augment: self.augment,
        }
    }

    /// The synthetic dataset's sizes are at least 1.
    pub fn validate(&self) -> Result<()> {
        at_least_one("--synth-train", self.synth_train)?;
        at_least_one("--synth-test", self.synth_test)
    }
}

impl ModelConfig {
    /// The network of `preset`, with `--widths` and `--hidden` overriding its sizes when given
    /// (not yet validated: see [`ModelConfig::validate`]).
    ///
    /// # Errors
    /// Widths other than four.
    pub fn new(preset: Preset, widths: Option<&[usize]>, hidden: Option<usize>) -> Result<Self> {
        let widths = match widths {
            None => preset.widths(),
            Some(w) => {
                let four = w.len() == 4;
                check(four, "--widths", "needs exactly 4 values", format!("{w:?}"))?;
                [w[0], w[1], w[2], w[3]]
            }
        };
        Ok(ModelConfig {
            preset,
            widths,
            hidden: hidden.unwrap_or(preset.hidden()),
        })
    }

    /// Every size is at least 1.
    pub fn validate(&self) -> Result<()> {
        check(
            self.widths.iter().all(|&w| w > 0),
            "--widths",
            "must all be at least 1",
            format!("{:?}", self.widths),
        )?;
        at_least_one("--hidden", self.hidden)
    }
}

impl OptimizerConfig {
    /// Rates, clipping and the rule are in range; warm-up ends before the run's `epochs`.
    pub fn validate(&self, epochs: u64) -> Result<()> {
        positive(self.lr, "--lr")?;
        check(
            self.lr_decay > 0.0 && self.lr_decay <= 1.0,
            "--lr-decay",
            "must be in (0, 1]",
            self.lr_decay,
        )?;
        // Infinity turns clipping off; a norm that would be 0 as the kernels' f32 is refused.
        check(
            self.clip_norm as f32 >= f32::MIN_POSITIVE,
            "--clip-norm",
            "must be > 0 (at least 1.2e-38; inf turns clipping off)",
            self.clip_norm,
        )?;
        check(
            self.warmup_epochs < epochs,
            "--warmup-epochs",
            "must be fewer than --epochs",
            self.warmup_epochs,
        )?;
        validate_rule(&self.rule)
    }
}

impl RegularizationConfig {
    /// Probabilities in (0, 1], a keep schedule that only goes down, a batch-norm momentum in
    /// [0, 1) and a positive epsilon.
    pub fn validate(&self) -> Result<()> {
        keep_probability(self.dropout_keep, "--dropout-keep")?;
        at_least_one("--dropblock-size", self.dropblock_size)?;
        keep_probability(self.dropblock_keep_start, "--dropblock-keep-start")?;
        keep_probability(self.dropblock_keep_end, "--dropblock-keep-end")?;
        check(
            self.dropblock_keep_end <= self.dropblock_keep_start,
            "--dropblock-keep-end",
            &format!(
                "must not exceed --dropblock-keep-start ({})",
                self.dropblock_keep_start
            ),
            self.dropblock_keep_end,
        )?;
        non_negative(self.dropblock_keep_step, "--dropblock-keep-step")?;
        unit_interval(self.bn_momentum, "--bn-momentum")?;
        positive(self.bn_epsilon, "--bn-epsilon")
    }
}

impl RunConfig {
    /// Every count is at least 1.
    pub fn validate(&self) -> Result<()> {
        at_least_one("--epochs", self.epochs)?;
        at_least_one("--batch-size", self.batch_size)?;
        at_least_one("--eval-batch-size", self.eval_batch_size)?;
        if let Some(n) = self.max_steps {
            at_least_one("--max-steps", n)?;
        }
        at_least_one("--log-every", self.log_every)?;
        validate_threads(self.threads)
    }
}

impl TrainConfig {
    /// Refuses values out of range, naming the flag that sets each one.
    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        self.data.validate()?;
        self.model.validate()?;
        self.optimizer.validate(self.run.epochs)?;
        self.regularization.validate()
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

//! The `trainer` command line (clap's derive API): subcommands `train`, `eval`, `predict`,
//! `download`, `synth` and `bench`. Every hyper-parameter of the seed's recipe is a flag whose
//! default is the seed's value; choices are enums, never strings.
//!
//! Parsing checks types and choices; [`Cli::validate`] then refuses values out of range (a zero
//! batch, a negative rate, a keep probability outside (0, 1], ...) before any work starts, and
//! [`TrainConfig::from_args`] turns the `train` flags into the run's `config.toml`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::config::{check, TrainConfig};
use crate::error::Result;

/// Trains, evaluates and runs the residual network of the CIFAR-100 tutorial series, from scratch.
#[derive(Debug, Parser)]
#[command(name = "trainer", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the `Train` variant costs nothing, and unboxed variants
// keep `match` arms simple for the binary.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train the network; writes config.toml, metrics, plots and checkpoints into --out.
    Train(TrainArgs),
    /// Evaluate a checkpoint on the test set: loss, top-1/top-5, per-class accuracy, confusion.
    Eval(EvalArgs),
    /// Classify PNG or JPEG images with a checkpoint: top-5 class names and probabilities.
    Predict(PredictArgs),
    /// Download and unpack the CIFAR-100 or CIFAR-10 binary release.
    Download(DownloadArgs),
    /// Write the synthetic dataset (CIFAR-100 layout) to a directory.
    Synth(SynthArgs),
    /// Measure training-step and inference throughput on synthetic input.
    Bench(BenchArgs),
}

impl Cli {
    /// Refuses flag values out of range, with a message naming the flag, before any work starts.
    pub fn validate(&self) -> Result<()> {
        match &self.command {
            Command::Train(a) => TrainConfig::from_args(a).map(|_| ()),
            Command::Eval(a) => {
                a.data.validate()?;
                a.runtime.validate()?;
                check(
                    a.batch_size > 0,
                    "--batch-size",
                    "must be at least 1",
                    a.batch_size,
                )
            }
            Command::Predict(a) => {
                a.runtime.validate()?;
                check(a.top_k > 0, "--top-k", "must be at least 1", a.top_k)
            }
            Command::Download(_) => Ok(()),
            Command::Synth(a) => {
                check(a.train > 0, "--train", "must be at least 1", a.train)?;
                check(a.test > 0, "--test", "must be at least 1", a.test)
            }
            Command::Bench(a) => {
                a.model.validate()?;
                a.runtime.validate()?;
                check(
                    a.batch_size > 0,
                    "--batch-size",
                    "must be at least 1",
                    a.batch_size,
                )?;
                check(a.steps > 0, "--steps", "must be at least 1", a.steps)
            }
        }
    }
}

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

/// Which algorithm computes the CPU convolutions (`trainer bench --conv-algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvAlgoArg {
    /// Each convolution and pass by `Conv2dAlgo::choose`'s measured rule.
    Auto,
    /// im2col + GEMM everywhere (the reference path).
    Direct,
    /// The sliding-window direct convolution (no im2col) for every convolution.
    Sliding,
    /// Winograd F(2x2, 3x3) for every convolution.
    Winograd2,
    /// Winograd F(4x4, 3x3) for every convolution.
    Winograd4,
}

impl ConvAlgoArg {
    /// The algorithm to pin every convolution to; `None` for the rule.
    pub fn pinned(self) -> Option<kernels::conv2d::Conv2dAlgo> {
        use kernels::conv2d::Conv2dAlgo;
        match self {
            ConvAlgoArg::Auto => None,
            ConvAlgoArg::Direct => Some(Conv2dAlgo::Direct),
            ConvAlgoArg::Sliding => Some(Conv2dAlgo::Sliding),
            ConvAlgoArg::Winograd2 => Some(Conv2dAlgo::Winograd2),
            ConvAlgoArg::Winograd4 => Some(Conv2dAlgo::Winograd4),
        }
    }
}

/// A dataset that `trainer download` can fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RealDataset {
    Cifar100,
    Cifar10,
}

impl From<RealDataset> for cifar_data::Format {
    fn from(d: RealDataset) -> Self {
        match d {
            RealDataset::Cifar100 => cifar_data::Format::Cifar100,
            RealDataset::Cifar10 => cifar_data::Format::Cifar10,
        }
    }
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

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam in TensorFlow 1's form, as the seed.
    Adam,
    /// Stochastic gradient descent with momentum (optionally Nesterov) and weight decay.
    Sgd,
}

/// How the learning rate moves over training.
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

/// Where the images come from.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Directory holding the dataset files (or the directory they were unpacked into).
    /// Without it, the synthetic dataset is generated in memory.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Dataset format [default: synthetic without --data, cifar100 with it].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Training images of the generated synthetic dataset.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub synth_train: usize,
    /// Test images of the generated synthetic dataset.
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub synth_test: usize,
    /// Seed of the generated synthetic dataset.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub synth_seed: u64,
}

impl DataArgs {
    /// The dataset format, with the default filled in.
    pub fn dataset(&self) -> DatasetKind {
        match (self.dataset, &self.data) {
            (Some(d), _) => d,
            (None, Some(_)) => DatasetKind::Cifar100,
            (None, None) => DatasetKind::Synthetic,
        }
    }

    pub fn validate(&self) -> Result<()> {
        check(
            self.synth_train > 0,
            "--synth-train",
            "must be at least 1",
            self.synth_train,
        )?;
        check(
            self.synth_test > 0,
            "--synth-test",
            "must be at least 1",
            self.synth_test,
        )
    }
}

/// The network's size.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// Network size; --widths and --hidden override parts of it.
    #[arg(long, value_enum, default_value_t = Preset::Seed)]
    pub preset: Preset,
    /// Channel widths of the four residual blocks, comma-separated (e.g. 64,128,256,512).
    #[arg(long, value_delimiter = ',', value_name = "W1,W2,W3,W4")]
    pub widths: Option<Vec<usize>>,
    /// Features of the two hidden fully-connected layers.
    #[arg(long, value_name = "N")]
    pub hidden: Option<usize>,
}

impl ModelArgs {
    /// The widths: --widths if given, else the preset's.
    pub fn widths(&self) -> Result<[usize; 4]> {
        match &self.widths {
            None => Ok(self.preset.widths()),
            Some(w) => {
                check(
                    w.len() == 4,
                    "--widths",
                    "needs exactly 4 values",
                    format!("{w:?}"),
                )?;
                check(
                    w.iter().all(|&c| c > 0),
                    "--widths",
                    "must all be at least 1",
                    format!("{w:?}"),
                )?;
                Ok([w[0], w[1], w[2], w[3]])
            }
        }
    }

    /// The hidden size: --hidden if given, else the preset's.
    pub fn hidden(&self) -> Result<usize> {
        let hidden = self.hidden.unwrap_or(self.preset.hidden());
        check(hidden > 0, "--hidden", "must be at least 1", hidden)?;
        Ok(hidden)
    }

    pub fn validate(&self) -> Result<()> {
        self.widths()?;
        self.hidden().map(|_| ())
    }
}

/// Where and how wide the computation runs.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Device")]
pub struct RuntimeArgs {
    /// auto, cpu, cuda or cuda:N (auto: the GPU when one is usable).
    #[arg(long, default_value_t = DeviceArg::Auto, value_name = "DEVICE")]
    pub device: DeviceArg,
    /// CPU threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl RuntimeArgs {
    pub fn validate(&self) -> Result<()> {
        match self.threads {
            Some(t) => check(t > 0, "--threads", "must be at least 1", t),
            None => Ok(()),
        }
    }
}

/// `trainer train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,

    /// Run directory: config.toml, metrics.csv, steps.csv, plots, image grid, checkpoints.
    #[arg(
        help_heading = "Run",
        long,
        default_value = "runs/latest",
        value_name = "RUN_DIR"
    )]
    pub out: PathBuf,
    /// Continue a run from its checkpoint: weights, optimizer, schedule and RNG state.
    #[arg(
        help_heading = "Run",
        long,
        value_name = "CKPT",
        conflicts_with = "init"
    )]
    pub resume: Option<PathBuf>,
    /// Start from a checkpoint's weights only, with a fresh optimizer and schedule.
    #[arg(help_heading = "Run", long, value_name = "CKPT")]
    pub init: Option<PathBuf>,
    /// Stop after this many optimizer steps in total (a checkpoint is written).
    #[arg(help_heading = "Run", long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Seed of initialisation, shuffling, augmentation, dropout and DropBlock.
    #[arg(help_heading = "Run", long, default_value_t = 0, value_name = "N")]
    pub seed: u64,

    /// Epochs at most.
    #[arg(help_heading = "Run", long, default_value_t = 75, value_name = "N")]
    pub epochs: u64,
    /// Training batch size.
    #[arg(help_heading = "Run", long, default_value_t = 250, value_name = "N")]
    pub batch_size: usize,
    /// Evaluation batch size.
    #[arg(help_heading = "Run", long, default_value_t = 250, value_name = "N")]
    pub eval_batch_size: usize,

    /// Update rule.
    #[arg(help_heading = "Optimizer", long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// Learning rate (after warm-up, before decay).
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        default_value_t = 5e-4,
        value_name = "RATE"
    )]
    pub lr: f64,
    /// Learning-rate factor per epoch of --schedule seed.
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        default_value_t = 0.98,
        value_name = "FACTOR"
    )]
    pub lr_decay: f64,
    /// Learning-rate schedule.
    #[arg(help_heading = "Optimizer", long, value_enum, default_value_t = ScheduleKind::Seed)]
    pub schedule: ScheduleKind,
    /// Epochs of linear learning-rate warm-up before the schedule (0: none).
    #[arg(
        help_heading = "Optimizer",
        long,
        default_value_t = 0,
        value_name = "N"
    )]
    pub warmup_epochs: u64,
    /// Adam's beta1 [default: 0.9] (Adam only).
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        value_name = "B"
    )]
    pub adam_beta1: Option<f64>,
    /// Adam's beta2 [default: 0.999] (Adam only).
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        value_name = "B"
    )]
    pub adam_beta2: Option<f64>,
    /// Adam's epsilon [default: 1e-8] (Adam only).
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        value_name = "EPS"
    )]
    pub adam_epsilon: Option<f64>,
    /// SGD momentum [default: 0.9] (SGD only).
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        value_name = "M"
    )]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD only).
    #[arg(help_heading = "Optimizer", long)]
    pub nesterov: bool,
    /// L2 weight decay added to the gradient [default: 5e-4] (SGD only).
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        value_name = "WD"
    )]
    pub weight_decay: Option<f64>,
    /// Clip gradients to this global L2 norm before the update.
    #[arg(
        help_heading = "Optimizer",
        long,
        allow_negative_numbers = true,
        default_value_t = 100.0,
        value_name = "NORM"
    )]
    pub clip_norm: f64,

    /// Keep probability of the dropout after the two hidden FC layers.
    #[arg(
        help_heading = "Regularization",
        long,
        allow_negative_numbers = true,
        default_value_t = 0.5,
        value_name = "P"
    )]
    pub dropout_keep: f64,
    /// DropBlock block size.
    #[arg(
        help_heading = "Regularization",
        long,
        default_value_t = 5,
        value_name = "N"
    )]
    pub dropblock_size: usize,
    /// DropBlock keep probability in the first epoch.
    #[arg(
        help_heading = "Regularization",
        long,
        allow_negative_numbers = true,
        default_value_t = 1.0,
        value_name = "P"
    )]
    pub dropblock_keep_start: f64,
    /// DropBlock keep probability never goes below this.
    #[arg(
        help_heading = "Regularization",
        long,
        allow_negative_numbers = true,
        default_value_t = 0.80,
        value_name = "P"
    )]
    pub dropblock_keep_end: f64,
    /// DropBlock keep probability drops by this after each epoch.
    #[arg(
        help_heading = "Regularization",
        long,
        allow_negative_numbers = true,
        default_value_t = 0.005,
        value_name = "P"
    )]
    pub dropblock_keep_step: f64,
    /// Batch-norm running-average momentum.
    #[arg(
        help_heading = "Regularization",
        long,
        allow_negative_numbers = true,
        default_value_t = 0.997,
        value_name = "M"
    )]
    pub bn_momentum: f64,
    /// Batch-norm epsilon.
    #[arg(
        help_heading = "Regularization",
        long,
        allow_negative_numbers = true,
        default_value_t = 1e-5,
        value_name = "EPS"
    )]
    pub bn_epsilon: f64,
    /// Training-set augmentation.
    #[arg(help_heading = "Regularization", long, value_enum, default_value_t = AugmentKind::Seed)]
    pub augment: AugmentKind,

    /// Stop when the test loss rose in each of the last N epochs (0: never stop early).
    #[arg(
        help_heading = "Evaluation and logging",
        long,
        default_value_t = 10,
        value_name = "N"
    )]
    pub patience: u64,
    /// Also evaluate on the whole training set after each epoch (the seed did).
    #[arg(help_heading = "Evaluation and logging", long)]
    pub eval_train: bool,
    /// Log minibatch loss, accuracy, learning rate and keep probability every N steps.
    #[arg(
        help_heading = "Evaluation and logging",
        long,
        default_value_t = 25,
        value_name = "N"
    )]
    pub log_every: u64,
}

/// `trainer eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Checkpoint to evaluate (its metadata says the network's size).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Batch size.
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub batch_size: usize,
    /// Write each test image's label, prediction and class probabilities to this CSV.
    #[arg(long, value_name = "FILE.csv")]
    pub predictions: Option<PathBuf>,
    /// Write the confusion matrix to this CSV [default: confusion.csv beside the checkpoint].
    #[arg(long, value_name = "FILE.csv")]
    pub confusion: Option<PathBuf>,
}

/// `trainer predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// Checkpoint to classify with.
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// PNG or JPEG files; each is resized to 32x32.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Classes to print per image.
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `trainer download`.
#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// Which release.
    #[arg(long, value_enum, default_value_t = RealDataset::Cifar100)]
    pub dataset: RealDataset,
    /// Directory to unpack into.
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub dir: PathBuf,
}

/// `trainer synth`.
#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Directory to write the dataset into.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Training images.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub train: usize,
    /// Test images.
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub test: usize,
    /// Seed.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
}

/// `trainer bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Images per step.
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub batch_size: usize,
    /// Timed steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub steps: u64,
    /// Also print the time of each layer kind, forward and backward, over the timed steps.
    #[arg(long)]
    pub profile: bool,
    /// The CPU convolutions' algorithm: every pass of every convolution pinned to one, or each
    /// chosen by the measured rule (all the seed's convolutions are 3x3, stride 1, pad 1, so
    /// every algorithm computes them).
    #[arg(long, value_enum, default_value_t = ConvAlgoArg::Auto, value_name = "ALGO")]
    pub conv_algo: ConvAlgoArg,
}

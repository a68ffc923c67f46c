//! The `trainer` command line (clap's derive API): subcommands `train`, `eval`, `predict`,
//! `preview`, `download`, `synth` and `bench`. Every hyper-parameter of the seed's recipe is a flag whose
//! default is the seed's value; choices are enums, never strings. Flags come in groups, each
//! flattened under its help heading.
//!
//! This module only declares the flags. [`TrainArgs::config`] turns the `train` flags into the
//! run's settings, and [`Cli::validate`] refuses values out of range before any work starts; the
//! rules themselves are [`crate::config`]'s.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    at_least_one, validate_threads, AugmentKind, CheckpointEvery, DataConfig, DataRecipe,
    DatasetKind, DeviceArg, ModelConfig, OptimizerConfig, OrderKind, PrecisionKind, PreprocessKind,
    Preset, RegularizationConfig, RuleFlags, RunConfig, Switch, TrainConfig,
};
use crate::error::Result;
use crate::optim::OptimizerKind;
use crate::precise_bn::{PreciseBnWhen, DEFAULT_BATCHES};
use crate::schedule::ScheduleKind;

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
    /// Show what the network sees: images preprocessed and augmented as training does them,
    /// before normalisation, as a PNG grid and as CIFAR records.
    Preview(PreviewArgs),
    /// Download and unpack the CIFAR-100 or CIFAR-10 binary release (or install a copy with
    /// --archive).
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
            Command::Train(a) => a.config().map(|_| ()),
            Command::Eval(a) => {
                a.data.validate()?;
                validate_threads(a.runtime.threads)?;
                at_least_one("--batch-size", a.batch_size)
            }
            Command::Predict(a) => {
                validate_threads(a.runtime.threads)?;
                at_least_one("--top-k", a.top_k)
            }
            Command::Preview(a) => {
                a.data.validate()?;
                at_least_one("--count", a.count)
            }
            Command::Download(_) => Ok(()),
            Command::Synth(a) => {
                at_least_one("--train", a.train)?;
                at_least_one("--test", a.test)
            }
            Command::Bench(a) => {
                a.model.config()?.validate()?;
                validate_threads(a.runtime.threads)?;
                at_least_one("--batch-size", a.batch_size)?;
                at_least_one("--steps", a.steps)
            }
        }
    }
}

/// Which algorithm computes the CPU convolutions (`trainer bench --conv-algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvAlgoArg {
    /// Each convolution and pass by the algorithm calibrated on this machine, or with
    /// `--conv-calibration off` by `Conv2dAlgo::choose`'s fixed rule.
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

    /// The data settings these flags describe, the images treated as `recipe` says.
    pub fn config(&self, recipe: DataRecipe) -> DataConfig {
        DataConfig {
            dataset: self.dataset(),
            dir: self.data.clone(),
            synth_train: self.synth_train,
            synth_test: self.synth_test,
            synth_seed: self.synth_seed,
            augment: recipe.augment,
            preprocess: recipe.preprocess,
            order: recipe.order,
        }
    }

    /// Refuses out-of-range values (for the subcommands that only read data: the recipe does not
    /// come from their flags).
    pub fn validate(&self) -> Result<()> {
        self.config(DataRecipe::SEED).validate()
    }
}

/// What training does to the images beside augmenting them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Data")]
pub struct RecipeArgs {
    /// Sharpen every training and test image once, before anything else, with the seed's 5x5
    /// unsharp mask (`eval` and `predict` apply what the checkpoint was trained with).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub sharpen: Switch,
    /// Training order: one seeded shuffle walked every epoch (the seed's), or a new one per epoch.
    #[arg(long, value_enum, default_value_t = OrderKind::Fixed)]
    pub order: OrderKind,
}

impl RecipeArgs {
    /// The preprocessing `--sharpen` asks for.
    pub fn preprocess(&self) -> PreprocessKind {
        match self.sharpen {
            Switch::On => PreprocessKind::Sharpen,
            Switch::Off => PreprocessKind::None,
        }
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
    /// The network these flags describe (see [`ModelConfig::new`]).
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::new(self.preset, self.widths.as_deref(), self.hidden)
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
    /// The convolution and linear products' operands: fp32; on a CUDA GPU of sm_80 or newer
    /// tf32 or bf16 (tensor cores, FP32 accumulation); on a CPU with AVX-512 BF16 bf16 (the
    /// convolutions by `vdpbf16ps`, FP32 accumulation). Weights, optimizer, batch norm and loss
    /// stay FP32 [default: fp32; eval, predict and --resume: the checkpoint's].
    #[arg(long, value_enum, value_name = "MODE")]
    pub precision: Option<PrecisionKind>,
    /// On the CPU: time each convolution's passes by every algorithm on their first call and
    /// keep the fastest (cached per CPU model and instruction set in
    /// ~/.cache/resnet-kernels/), or with `off` take a fixed rule, the same algorithms on every
    /// machine. KERNELS_CONV_CALIBRATE=0 or 1 in the environment overrides it.
    #[arg(
        long,
        value_enum,
        value_name = "on|off",
        default_value_t = Switch::On,
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub conv_calibration: Switch,
}

/// `trainer train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    #[command(flatten)]
    pub regularization: RegularizationArgs,
    #[command(flatten)]
    pub logging: LoggingArgs,
}

impl TrainArgs {
    /// The run's settings these flags describe, validated ([`TrainConfig::validate`]).
    ///
    /// # Errors
    /// A value out of range, or a flag of the other update rule, naming the flag.
    pub fn config(&self) -> Result<TrainConfig> {
        let (run, o, r, log) = (
            &self.run,
            &self.optimizer,
            &self.regularization,
            &self.logging,
        );
        let recipe = DataRecipe {
            preprocess: self.recipe.preprocess(),
            order: self.recipe.order,
            augment: r.augment,
        };
        let config = TrainConfig {
            data: self.data.config(recipe),
            model: self.model.config()?,
            optimizer: OptimizerConfig {
                lr: o.lr,
                lr_decay: o.lr_decay,
                schedule: o.schedule,
                warmup_epochs: o.warmup_epochs,
                clip_norm: o.clip_norm,
                rule: o.rule_flags().rule(o.optimizer)?,
            },
            regularization: RegularizationConfig {
                dropout_keep: r.dropout_keep,
                dropblock_size: r.dropblock_size,
                dropblock_keep_start: r.dropblock_keep_start,
                dropblock_keep_end: r.dropblock_keep_end,
                dropblock_keep_step: r.dropblock_keep_step,
                bn_momentum: r.bn_momentum,
                bn_epsilon: r.bn_epsilon,
            },
            run: RunConfig {
                epochs: run.epochs,
                batch_size: run.batch_size,
                eval_batch_size: run.eval_batch_size,
                seed: run.seed,
                max_steps: run.max_steps,
                patience: log.patience,
                eval_train: log.eval_train.is_on(),
                precise_bn: log.precise_bn,
                precise_bn_when: log.precise_bn_when,
                log_every: log.log_every,
                device: self.runtime.device,
                threads: self.runtime.threads,
                checkpoint_every: run.checkpoint_every,
                precision: self.runtime.precision.unwrap_or_default(),
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// The run's files, where it starts, and its length and batches.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Run")]
pub struct RunArgs {
    /// Run directory: config.toml, metrics.csv, steps.csv, plots, image grid, checkpoints.
    #[arg(long, default_value = "runs/latest", value_name = "RUN_DIR")]
    pub out: PathBuf,
    /// Continue a run from its checkpoint: weights, optimizer, schedule and RNG state.
    #[arg(long, value_name = "CKPT", conflicts_with = "init")]
    pub resume: Option<PathBuf>,
    /// Start from a checkpoint's weights only, with a fresh optimizer and schedule.
    #[arg(long, value_name = "CKPT")]
    pub init: Option<PathBuf>,
    /// Stop after this many optimizer steps in total (a checkpoint is written).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Also write last.safetensors during an epoch: after TIME (90s, 10m, 2h) since the last
    /// checkpoint, every N steps (500steps or 500), or off (at epoch ends only).
    #[arg(long, default_value_t = CheckpointEvery::DEFAULT, value_name = "TIME|STEPS")]
    pub checkpoint_every: CheckpointEvery,
    /// Seed of initialisation, shuffling, augmentation, dropout and DropBlock.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,

    /// Epochs at most.
    #[arg(long, default_value_t = 75, value_name = "N")]
    pub epochs: u64,
    /// Training batch size.
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub batch_size: usize,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 250, value_name = "N")]
    pub eval_batch_size: usize,
}

/// The update rule, the learning rate and its schedule, clipping.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Optimizer")]
pub struct OptimizerArgs {
    /// Update rule.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// Learning rate (after warm-up, before decay).
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 5e-4,
        value_name = "RATE"
    )]
    pub lr: f64,
    /// Learning-rate factor per epoch of --schedule seed.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 0.98,
        value_name = "FACTOR"
    )]
    pub lr_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Seed)]
    pub schedule: ScheduleKind,
    /// Epochs of linear learning-rate warm-up before the schedule (0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup_epochs: u64,
    /// Adam's beta1 [default: 0.9] (Adam only).
    #[arg(long, allow_negative_numbers = true, value_name = "B")]
    pub adam_beta1: Option<f64>,
    /// Adam's beta2 [default: 0.999] (Adam only).
    #[arg(long, allow_negative_numbers = true, value_name = "B")]
    pub adam_beta2: Option<f64>,
    /// Adam's epsilon [default: 1e-8] (Adam only).
    #[arg(long, allow_negative_numbers = true, value_name = "EPS")]
    pub adam_epsilon: Option<f64>,
    /// SGD momentum [default: 0.9] (SGD only).
    #[arg(long, allow_negative_numbers = true, value_name = "M")]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD only).
    #[arg(long)]
    pub nesterov: bool,
    /// L2 weight decay added to the gradient [default: 5e-4] (SGD only).
    #[arg(long, allow_negative_numbers = true, value_name = "WD")]
    pub weight_decay: Option<f64>,
    /// Clip gradients to this global L2 norm before the update.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 100.0,
        value_name = "NORM"
    )]
    pub clip_norm: f64,
}

impl OptimizerArgs {
    /// The update-rule flags as given.
    fn rule_flags(&self) -> RuleFlags {
        RuleFlags {
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_epsilon: self.adam_epsilon,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        }
    }
}

/// Dropout, DropBlock, batch norm and augmentation.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Regularization")]
pub struct RegularizationArgs {
    /// Keep probability of the dropout after the two hidden FC layers.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 0.5,
        value_name = "P"
    )]
    pub dropout_keep: f64,
    /// DropBlock block size.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub dropblock_size: usize,
    /// DropBlock keep probability in the first epoch.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 1.0,
        value_name = "P"
    )]
    pub dropblock_keep_start: f64,
    /// DropBlock keep probability never goes below this.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 0.80,
        value_name = "P"
    )]
    pub dropblock_keep_end: f64,
    /// DropBlock keep probability drops by this after each epoch.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 0.005,
        value_name = "P"
    )]
    pub dropblock_keep_step: f64,
    /// Batch-norm running-average momentum.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 0.997,
        value_name = "M"
    )]
    pub bn_momentum: f64,
    /// Batch-norm epsilon.
    #[arg(
        long,
        allow_negative_numbers = true,
        default_value_t = 1e-5,
        value_name = "EPS"
    )]
    pub bn_epsilon: f64,
    /// Training-set augmentation.
    #[arg(long, value_enum, default_value_t = AugmentKind::Seed)]
    pub augment: AugmentKind,
}

/// Early stopping, evaluation and logging.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Evaluation and logging")]
pub struct LoggingArgs {
    /// Stop when the test loss rose in each of the last N epochs (0: never stop early).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub patience: u64,
    /// Evaluate on the whole training set after each epoch, as the seed did (its 99.5% is that
    /// figure); `--eval-train` alone means on.
    #[arg(
        long,
        value_enum,
        default_value_t = Switch::On,
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub eval_train: Switch,
    /// Before an evaluation, recompute batch norm's running statistics as their mean over the
    /// first N training batches of the epoch, dropout and DropBlock off (at most an epoch's
    /// batches; 0: never). By default only while the moving averages have not converged
    /// (--precise-bn-when): a short run then reports what its network learned, and the seed's
    /// recipe is evaluated from its own moving averages from epoch 8 on. It changes no weight.
    #[arg(long, default_value_t = DEFAULT_BATCHES, value_name = "N")]
    pub precise_bn: u64,
    /// When --precise-bn recomputes: while the moving averages' initial values weigh more than 1%
    /// (momentum^steps > 0.01), or before every evaluation.
    #[arg(long, value_enum, default_value_t = PreciseBnWhen::Unconverged)]
    pub precise_bn_when: PreciseBnWhen,
    /// Log minibatch loss, accuracy, learning rate and keep probability every N steps.
    #[arg(long, default_value_t = 25, value_name = "N")]
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

/// Which split of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Train,
    Test,
}

/// `trainer preview`.
#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The split whose first --count images are shown.
    #[arg(long, value_enum, default_value_t = SplitArg::Train)]
    pub split: SplitArg,
    /// Augmentation, as `train --augment` (the images as training batch 0 of --epoch draws it).
    #[arg(long, value_enum, default_value_t = AugmentKind::Seed)]
    pub augment: AugmentKind,
    /// Sharpen first, as `train --sharpen`.
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub sharpen: Switch,
    /// Images shown (the first of the split).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub count: usize,
    /// Seed of the augmentation, as `train --seed`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// Epoch whose augmentation is drawn (counted from 0).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub epoch: u64,
    /// Writes PREFIX.png (the grid) and PREFIX.bin (the images as CIFAR records with labels).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
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
    /// Install from this copy of the release (cifar-100-binary.tar.gz or
    /// cifar-10-binary.tar.gz) instead of downloading: its MD5 is checked and it is unpacked
    /// with the same checks, replacing a dataset already in --dir.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
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
    /// chosen as `--conv-calibration` says (all the seed's convolutions are 3x3, stride 1, pad
    /// 1, so every algorithm computes them).
    #[arg(long, value_enum, default_value_t = ConvAlgoArg::Auto, value_name = "ALGO")]
    pub conv_algo: ConvAlgoArg,
}

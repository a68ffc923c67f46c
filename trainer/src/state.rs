//! What a checkpoint holds beyond the file format: the model's tensors under their PyTorch names,
//! the optimizer's state, and the run's position (step, epoch, early-stopping history) and
//! settings as metadata. All randomness is counter-based (keyed by seed, epoch, step and index), so
//! the seed and the step are the whole RNG state.

use std::path::Path;

use kernels::batchnorm::BatchNormConfig;
use nn_layers::Parameters;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Tensor;

use crate::checkpoint::{self, Checkpoint, NamedTensor};
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::model::{NetSpec, ResNet};
use crate::optim::Optimizer;
use crate::schedule::KeepSchedule;

/// Written in every checkpoint's metadata under `format`.
pub const FORMAT: &str = "cifar-resnet-rs/1";

/// Where a run is, saved so that `--resume` continues exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    /// Optimizer steps done.
    pub step: u64,
    /// Epochs fully done.
    pub epoch: u64,
    /// Batches of epoch `epoch` already trained on (0 at an epoch boundary).
    pub batch_in_epoch: usize,
    /// Test loss after each finished epoch, for early stopping.
    pub test_losses: Vec<f64>,
    /// Sums over the batches of the epoch in progress, for its mean training loss and accuracy.
    pub epoch_loss_sum: f64,
    pub epoch_correct: u64,
    pub epoch_seen: u64,
}

impl RunState {
    pub fn new() -> RunState {
        RunState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            test_losses: Vec::new(),
            epoch_loss_sum: 0.0,
            epoch_correct: 0,
            epoch_seen: 0,
        }
    }

    /// One optimizer step on a batch of `images` done.
    pub fn advance(&mut self, images: usize) {
        self.step += 1;
        self.batch_in_epoch += 1;
        self.epoch_seen += images as u64;
    }

    /// The epoch in progress finished with `test_loss`: the next one starts at its first batch,
    /// its sums at zero.
    pub fn end_epoch(&mut self, test_loss: f64) {
        self.epoch += 1;
        self.batch_in_epoch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_correct = 0;
        self.epoch_seen = 0;
        self.test_losses.push(test_loss);
    }

    /// The epoch in progress's mean minibatch loss and accuracy so far (training mode).
    pub fn epoch_means(&self) -> (f64, f64) {
        (
            self.epoch_loss_sum / self.batch_in_epoch.max(1) as f64,
            self.epoch_correct as f64 / self.epoch_seen.max(1) as f64,
        )
    }

    /// True when the test loss rose in each of the last `patience` epochs (the seed's rule).
    pub fn should_stop(&self, patience: u64) -> bool {
        let p = patience as usize;
        p > 0
            && self.test_losses.len() > p
            && self.test_losses[self.test_losses.len() - p - 1..]
                .windows(2)
                .all(|w| w[1] > w[0])
    }
}

impl Default for RunState {
    fn default() -> Self {
        RunState::new()
    }
}

/// The network a configuration describes, for a dataset of `classes` classes.
pub fn net_spec(cfg: &TrainConfig, classes: usize, epoch: u64) -> NetSpec {
    let r = &cfg.regularization;
    NetSpec {
        widths: cfg.model.widths,
        hidden: cfg.model.hidden,
        classes,
        block_size: r.dropblock_size,
        block_keep: keep_schedule(cfg).keep(epoch),
        fc_keep: r.dropout_keep as f32,
        bn: BatchNormConfig {
            eps: r.bn_epsilon as f32,
            momentum: r.bn_momentum as f32,
            ..BatchNormConfig::default()
        },
    }
}

/// DropBlock's keep probability per epoch, from the configuration.
pub fn keep_schedule(cfg: &TrainConfig) -> KeepSchedule {
    let r = &cfg.regularization;
    KeepSchedule {
        start: r.dropblock_keep_start,
        end: r.dropblock_keep_end,
        step: r.dropblock_keep_step,
    }
}

/// Calls `f` on each tensor of the model a checkpoint holds, with its name: the parameters'
/// values, then the batch-norm statistics.
fn visit_model_tensors(model: &mut ResNet, f: &mut dyn FnMut(&str, &mut Tensor)) {
    model.visit_params("", &mut |n, p| f(n, &mut p.value));
    model.visit_buffers("", f);
}

/// The model's tensors (parameters and batch-norm statistics) with their names and shapes.
pub fn model_layout(model: &mut ResNet) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    visit_model_tensors(model, &mut |n, t| {
        out.push((n.to_string(), t.dims().to_vec()))
    });
    out
}

/// Writes model, optimizer (if any), settings, class names and run state to `path`, atomically.
pub fn save(
    path: &Path,
    model: &mut ResNet,
    optimizer: Option<&mut Optimizer>,
    cfg: &TrainConfig,
    class_names: &[String],
    state: &RunState,
) -> Result<()> {
    // The copy below is as large as the model and its optimizer state (890 MiB for the seed), and
    // it comes when the caching allocator holds a step's worth of free blocks: they go back to
    // the system first, so that the copy takes their place instead of adding to them, and the
    // copy's blocks go back after the write (`trainer bench`, seed at batch 64, AMD EPYC: the
    // peak resident set 2,343 MiB instead of 2,630; the next step maps its blocks again: on
    // `small` at batch 250, a checkpoint after every step cost 0.24 s each instead of 0.10).
    tensor_core::alloc::trim();
    let mut ckpt = Checkpoint::default();
    let mut push = |name: &str, t: &mut Tensor| {
        ckpt.tensors.push(NamedTensor {
            name: name.to_string(),
            shape: t.dims().to_vec(),
            data: t.to_vec(),
        })
    };
    visit_model_tensors(model, &mut push);
    if let Some(opt) = optimizer {
        opt.visit_state(model, &mut push);
        ckpt.set_meta("optimizer_updates", opt.updates);
    }
    ckpt.set_meta("format", FORMAT);
    ckpt.set_meta("config", cfg.to_toml()?);
    ckpt.set_meta("classes", class_names.len());
    ckpt.set_meta("class_names", class_names.join("\n"));
    ckpt.set_meta("step", state.step);
    ckpt.set_meta("epoch", state.epoch);
    ckpt.set_meta("batch_in_epoch", state.batch_in_epoch);
    let losses: Vec<String> = state.test_losses.iter().map(|l| format!("{l:e}")).collect();
    ckpt.set_meta("test_losses", losses.join(","));
    // Rust prints the shortest text that parses back to the same f64: the sums resume exactly.
    ckpt.set_meta("epoch_loss_sum", state.epoch_loss_sum);
    ckpt.set_meta("epoch_correct", state.epoch_correct);
    ckpt.set_meta("epoch_seen", state.epoch_seen);
    let saved = checkpoint::save(path, &ckpt);
    drop(ckpt);
    tensor_core::alloc::trim();
    saved
}

/// A checkpoint read back: the settings it was trained with and where the run was.
#[derive(Debug)]
pub struct Loaded {
    pub checkpoint: Checkpoint,
    pub config: TrainConfig,
    pub class_names: Vec<String>,
    pub state: RunState,
}

/// Reads a checkpoint written by [`save`]. Before anything is built from it, its weights must
/// have the shapes its settings describe: a file of a few bytes cannot make `eval`, `predict`
/// or `--resume` allocate a network of any size.
///
/// # Errors
/// A missing, corrupt or foreign file, naming the path and the entry that is wrong.
pub fn load(path: &Path) -> Result<Loaded> {
    let checkpoint = checkpoint::load(path)?;
    let format: String = meta(&checkpoint, path, "format")?;
    if format != FORMAT {
        return Err(Error::format(
            path,
            format!("checkpoint format {format:?}, this trainer reads {FORMAT:?}"),
        ));
    }
    let config_text: String = meta(&checkpoint, path, "config")?;
    let config = TrainConfig::from_toml(&config_text, path)?;
    let class_names: Vec<String> = checkpoint
        .metadata
        .get("class_names")
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let classes: usize = meta(&checkpoint, path, "classes")?;
    if class_names.len() != classes || classes == 0 {
        return Err(Error::format(
            path,
            format!("{} class names for {classes} classes", class_names.len()),
        ));
    }
    check_weight_shapes(path, &checkpoint, &net_spec(&config, classes, 0))?;
    let state = run_state(path, &checkpoint)?;
    Ok(Loaded {
        checkpoint,
        config,
        class_names,
        state,
    })
}

/// The metadata entry `key` parsed as `T`; the error names the file.
fn meta<T: std::str::FromStr>(ckpt: &Checkpoint, path: &Path, key: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    ckpt.meta(key)
        .map_err(|e| Error::format(path, e.to_string()))
}

/// Refuses a checkpoint whose convolution and linear weights are not the shapes its settings
/// describe (naming each tensor with both shapes), before a network of those settings is built:
/// it could not match, and settings in a file could ask for any amount of memory. Once they
/// match, the network is about the size of the file.
fn check_weight_shapes(path: &Path, ckpt: &Checkpoint, spec: &NetSpec) -> Result<()> {
    let problems: Vec<String> = spec
        .weight_shapes()
        .into_iter()
        .filter_map(|(name, shape)| match ckpt.tensor(&name) {
            None => Some(format!("missing tensor {name} (model expects {shape:?})")),
            Some(t) if t.shape != shape => Some(format!(
                "tensor {name} has shape {:?} in the checkpoint, the model expects {shape:?}",
                t.shape
            )),
            Some(_) => None,
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// The run's position saved in the metadata.
fn run_state(path: &Path, ckpt: &Checkpoint) -> Result<RunState> {
    let losses: String = meta(ckpt, path, "test_losses")?;
    let test_losses = losses
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::format(path, format!("test_losses {losses:?}: {e}")))?;
    Ok(RunState {
        step: meta(ckpt, path, "step")?,
        epoch: meta(ckpt, path, "epoch")?,
        batch_in_epoch: meta(ckpt, path, "batch_in_epoch")?,
        test_losses,
        epoch_loss_sum: meta(ckpt, path, "epoch_loss_sum")?,
        epoch_correct: meta(ckpt, path, "epoch_correct")?,
        epoch_seen: meta(ckpt, path, "epoch_seen")?,
    })
}

/// Copies the checkpoint's model tensors into `model`, after checking that every one is present
/// with the model's shape (optimizer state in the file is ignored here).
///
/// # Errors
/// [`Error::Mismatch`] naming each missing, extra or wrongly shaped tensor with both shapes;
/// [`Error::Format`] if a batch-norm running variance is negative or NaN (no run writes one,
/// and the layers refuse it).
pub fn load_weights(path: &Path, ckpt: &Checkpoint, model: &mut ResNet) -> Result<()> {
    let model_only = Checkpoint {
        tensors: ckpt
            .tensors
            .iter()
            .filter(|t| !t.name.starts_with("optimizer."))
            .cloned()
            .collect(),
        metadata: Default::default(),
    };
    model_only.validate(path, &model_layout(model))?;
    check_variances(path, ckpt, |name| name.ends_with(".running_var"))?;
    let mut failure = None;
    let mut copy = |name: &str, t: &mut Tensor| {
        let src = ckpt.tensor(name).expect("validated above");
        if let Err(e) = Tensor::from_vec(src.shape.clone(), src.data.clone()).map(|v| *t = v) {
            failure.get_or_insert(e);
        }
    };
    visit_model_tensors(model, &mut copy);
    failure.map_or(Ok(()), |e| Err(e.into()))
}

/// [`Error::Format`] if a tensor of `ckpt` whose name `is_variance` (a running variance, an
/// Adam second moment) holds a negative or NaN value.
fn check_variances(path: &Path, ckpt: &Checkpoint, is_variance: fn(&str) -> bool) -> Result<()> {
    for t in ckpt.tensors.iter().filter(|t| is_variance(&t.name)) {
        if let Some((i, v)) = t
            .data
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_nan() || **v < 0.0)
        {
            let msg = format!("tensor {}[{i}] is {v}, a variance must be >= 0", t.name);
            return Err(Error::format(path, msg));
        }
    }
    Ok(())
}

/// Copies the optimizer state saved in the checkpoint into `optimizer`.
///
/// # Errors
/// [`Error::Mismatch`] if the checkpoint lacks state for a parameter or holds another shape (a
/// checkpoint of the other update rule, say); [`Error::Format`] if an Adam second moment is
/// negative or NaN.
pub fn load_optimizer(
    path: &Path,
    ckpt: &Checkpoint,
    model: &mut ResNet,
    optimizer: &mut Optimizer,
) -> Result<()> {
    check_variances(path, ckpt, |name| name.starts_with("optimizer.v."))?;
    let mut problems = Vec::new();
    optimizer.visit_state(model, &mut |name, t| match ckpt.tensor(name) {
        Some(src) if src.shape == t.dims() => {
            *t = Tensor::from_vec(src.shape.clone(), src.data.clone()).expect("shape checked");
        }
        Some(src) => problems.push(format!(
            "tensor {name} has shape {:?} in the checkpoint, the optimizer expects {:?}",
            src.shape,
            t.dims()
        )),
        None => problems.push(format!("missing optimizer state {name}")),
    });
    if !problems.is_empty() {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    optimizer.updates = meta(ckpt, path, "optimizer_updates")?;
    Ok(())
}

/// Builds the network a checkpoint was trained as and loads its weights: what `eval` and
/// `predict` need.
pub fn load_model(path: &Path) -> Result<(ResNet, Loaded)> {
    let loaded = load(path)?;
    let spec = net_spec(&loaded.config, loaded.class_names.len(), loaded.state.epoch);
    // The initialisation is overwritten at once; any seed will do.
    let mut model = ResNet::new(&spec, &mut ChaCha8Rng::seed_from_u64(0))?;
    load_weights(path, &loaded.checkpoint, &mut model)?;
    Ok((model, loaded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use rand::Rng;
    use tensor_core::Device;

    /// The train flags' defaults with the `tiny` preset: a network the test builds in moments.
    fn tiny_config() -> TrainConfig {
        match Cli::try_parse_from(["trainer", "train", "--preset", "tiny"])
            .unwrap()
            .command
        {
            Command::Train(a) => a.config().unwrap(),
            _ => unreachable!("parsed a train command"),
        }
    }

    /// Every tensor a checkpoint holds, by name, with the device it lives on.
    fn contents(model: &mut ResNet, opt: &mut Optimizer) -> Vec<(String, Device, Vec<f32>)> {
        let mut out = Vec::new();
        let mut push = |n: &str, t: &mut Tensor| out.push((n.to_string(), t.device(), t.to_vec()));
        visit_model_tensors(model, &mut push);
        opt.visit_state(model, &mut push);
        out
    }

    /// A fresh model and optimizer of `cfg`'s network (its own random initialisation, which
    /// a load must overwrite entirely).
    fn fresh(cfg: &TrainConfig, seed: u64) -> (ResNet, Optimizer) {
        let spec = net_spec(cfg, 100, 0);
        let mut model = ResNet::new(&spec, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        let opt = Optimizer::new(cfg.optimizer.rule, &mut model);
        (model, opt)
    }

    /// Moves the model and its optimizer state to `device`, as `trainer train` does.
    fn move_to(model: &mut ResNet, opt: &mut Optimizer, device: Device) {
        model.to_device(device).unwrap();
        opt.to_device(model, device).unwrap();
    }

    fn save_into(path: &Path, model: &mut ResNet, opt: &mut Optimizer, cfg: &TrainConfig) {
        let names: Vec<String> = (0..100).map(|c| format!("class_{c}")).collect();
        save(path, model, Some(opt), cfg, &names, &RunState::new()).unwrap();
    }

    fn load_into(path: &Path, model: &mut ResNet, opt: &mut Optimizer) {
        let loaded = load(path).unwrap();
        load_weights(path, &loaded.checkpoint, model).unwrap();
        load_optimizer(path, &loaded.checkpoint, model, opt).unwrap();
    }

    /// A checkpoint saved from a model on the GPU (here the emulated one, whose tensors are
    /// device storage as a GPU's are) loads on the CPU, and one saved on the CPU loads and moves
    /// onto the GPU, every tensor (parameters, batch-norm statistics, Adam's moments) unchanged.
    #[test]
    fn emu_checkpoints_saved_on_one_device_load_on_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config();
        let (mut model, mut opt) = fresh(&cfg, 1);
        // State a fresh model and optimizer do not have: running statistics and moments.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut randomise = |t: &mut Tensor| {
            let values = (0..t.len()).map(|_| rng.random_range(0.01..2.0)).collect();
            *t = Tensor::from_vec(t.shape().clone(), values).unwrap();
        };
        model.visit_buffers("", &mut |_, t| randomise(t));
        opt.visit_state(&mut model, &mut |_, t| randomise(t));
        opt.updates = 7;
        let on_cpu = contents(&mut model, &mut opt);

        move_to(&mut model, &mut opt, Device::CudaEmu);
        let on_device = contents(&mut model, &mut opt);
        assert!(on_device.iter().all(|(_, d, _)| *d == Device::CudaEmu));
        let from_device = dir.path().join("device.safetensors");
        save_into(&from_device, &mut model, &mut opt, &cfg);

        let (mut cpu_model, mut cpu_opt) = fresh(&cfg, 3);
        load_into(&from_device, &mut cpu_model, &mut cpu_opt);
        assert_eq!(contents(&mut cpu_model, &mut cpu_opt), on_cpu);
        assert_eq!(cpu_opt.updates, 7);

        let from_cpu = dir.path().join("cpu.safetensors");
        save_into(&from_cpu, &mut cpu_model, &mut cpu_opt, &cfg);
        let (mut dev_model, mut dev_opt) = fresh(&cfg, 4);
        load_into(&from_cpu, &mut dev_model, &mut dev_opt);
        move_to(&mut dev_model, &mut dev_opt, Device::CudaEmu);
        assert_eq!(contents(&mut dev_model, &mut dev_opt), on_device);
        assert_eq!(
            load(&from_device).unwrap().checkpoint,
            load(&from_cpu).unwrap().checkpoint,
            "the same state writes the same checkpoint from either device"
        );
    }

    /// A negative or NaN variance (a batch-norm running variance, an Adam second moment) in a
    /// checkpoint is a format error naming the file and the tensor, before anything is copied:
    /// the layers would refuse it at the first forward (a fuzzer's finding).
    #[test]
    fn negative_or_nan_variances_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config();
        let (mut model, mut opt) = fresh(&cfg, 1);
        let good = dir.path().join("good.safetensors");
        save_into(&good, &mut model, &mut opt, &cfg);
        let cases = [
            ("blocks.1.conv_block1.bn1.running_var", -2.6e-7),
            ("fc2.bn.running_var", f32::NAN),
            ("optimizer.v.fc3.weight", -1.0),
        ];
        for (name, value) in cases {
            let mut ckpt = load(&good).unwrap().checkpoint;
            let t = ckpt.tensors.iter_mut().find(|t| t.name == name);
            let t = t.unwrap_or_else(|| panic!("{name} is in the checkpoint"));
            t.data[3] = value;
            let (mut model, mut opt) = fresh(&cfg, 2);
            let path = dir.path().join("bad.safetensors");
            let result = if name.starts_with("optimizer.") {
                load_optimizer(&path, &ckpt, &mut model, &mut opt)
            } else {
                load_weights(&path, &ckpt, &mut model)
            };
            let err = result.unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("bad.safetensors"), "{msg}");
            assert!(
                msg.contains(&format!("tensor {name}[3] is {value}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn early_stopping_needs_a_rise_in_each_of_the_last_epochs() {
        let mut s = RunState::new();
        s.test_losses = vec![3.0, 2.0, 2.1, 2.2, 2.3];
        assert!(s.should_stop(3));
        assert!(!s.should_stop(4), "only three rises so far");
        s.test_losses.push(2.25);
        assert!(!s.should_stop(3));
        assert!(!s.should_stop(0), "patience 0 never stops");
    }
}

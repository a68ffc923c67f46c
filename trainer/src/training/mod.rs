//! The training loop: a [`Trainer`] holds what a run changes as it goes (the model, the optimizer
//! and the run's position) and walks it, as llm.c's `main` does: [`run`] sets up, then
//! [`Trainer::fit`] runs epochs until the run ends, [`Trainer::epoch`] one epoch's steps, and
//! [`Trainer::step`] one optimizer step (forward, loss, backward, update).
//!
//! What the loop reads and writes is handed to it, not owned: the batches (the data policy,
//! [`TrainBatches`]), the checkpoints ([`checkpoints`]: `last` and `best`, where a run starts)
//! and the logs ([`log`]: progress bar, step and epoch lines, the CSV files, plots, the final
//! results).
//!
//! Before each evaluation, [`PreciseBn`] recomputes batch norm's running statistics when the run
//! asks for it ([`crate::precise_bn`]); the epoch line says which statistics evaluated.
//!
//! A run is a pure function of its settings: the shuffle and augmentation are keyed by (seed,
//! epoch, image), the masks by (seed, step, layer), so `--resume` from any checkpoint continues
//! bit-identically, even from the middle of an epoch.

pub mod checkpoints;
pub mod log;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cifar_data::{Batch, Dataset, Split};
use kernels::softmax_ce::{LossTally, TallyReport};
use nn_layers::{into_device, ForwardCtx, SoftmaxCrossEntropy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Device;

use crate::config::{TrainConfig, CONFIG_FILE};
use crate::data::TrainBatches;
use crate::error::Error;
use crate::evaluate::evaluate;
use crate::memory::{explain_out_of_memory, MemoryUse};
use crate::metrics::EpochRecord;
use crate::model::ResNet;
use crate::optim::Optimizer;
use crate::precise_bn::PreciseBn;
use crate::schedule::{KeepSchedule, LrSchedule};
use crate::state::{self, RunState};

use checkpoints::{Checkpoints, Start};
use log::{EpochProgress, EvalNotes, TrainLog};

/// Set by Ctrl-C; the loop finishes its step, writes a checkpoint and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs done.
    Finished,
    /// The test loss rose `patience` epochs in a row.
    EarlyStopped,
    /// `--max-steps` reached.
    StepLimit,
    /// Ctrl-C.
    Interrupted,
}

/// What a run reads: its training batches, and the dataset (the test split for evaluation, the
/// whole training split with `--eval-train`, the class names).
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    pub batches: &'a TrainBatches,
    pub dataset: &'a Dataset,
}

/// Where a run writes: its checkpoints and its logs.
#[derive(Debug)]
pub struct Outputs<'a> {
    pub checkpoints: Checkpoints<'a>,
    pub log: TrainLog,
}

/// How an epoch's steps ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpochEnd {
    /// Every batch trained; `lr` is the learning rate of the last step (metrics.csv's).
    Trained { lr: f64 },
    /// The run stops before the epoch's end (its last checkpoint written).
    Stopped(Outcome),
}

/// Why a step stopped before its update (nothing was updated).
#[derive(Debug)]
pub struct Diverged {
    /// The optimizer's refusal, naming the first parameter whose gradient is not finite; `None`
    /// when the loss was found not finite before the backward (on the CPU).
    pub refusal: Option<Error>,
}

/// Trains `cfg` on `dataset` from `start` on `device`, writing everything into `out`: sets up
/// the model, the optimizer and the run directory, then [`Trainer::fit`].
///
/// # Errors
/// A batch larger than the training set, a checkpoint that does not fit, a file that cannot be
/// written, or a run that diverges (naming the step and where).
pub fn run(
    cfg: &TrainConfig,
    dataset: &Dataset,
    out: &Path,
    start: Start,
    device: Device,
) -> anyhow::Result<Outcome> {
    let batches = TrainBatches::new(cfg, dataset.train.clone());
    if batches.per_epoch() == 0 {
        bail!(
            "--batch-size {} is larger than the training set ({} images)",
            cfg.run.batch_size,
            dataset.train.len()
        );
    }
    let classes = dataset.fine_names.len();
    let mut trainer = Trainer::new(cfg, classes, batches.per_epoch())?;
    // Checkpoints load into the CPU model; the run then moves model and optimizer state to the
    // device, and checkpoints are written from host copies (state::save reads back).
    let (model, optimizer) = (&mut trainer.model, &mut trainer.optimizer);
    let resumed = match start.restore(model, optimizer, &dataset.fine_names)? {
        Some(st) => {
            trainer.state = st;
            true
        }
        None => false,
    };
    trainer.to_device(device)?;
    log::model_summary(cfg, classes, &mut trainer.model);

    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    cfg.save(&out.join(CONFIG_FILE))?;
    let resumed_at = resumed.then_some(&trainer.state);
    let log = TrainLog::create(out, cfg, batches.per_epoch(), resumed_at)?;
    let checkpoints = Checkpoints::new(out, cfg, &dataset.fine_names, &log.history()?);
    // A second handler (tests run several trainings in one process) is refused; the first stays.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let data = Data {
        batches: &batches,
        dataset,
    };
    let run = trainer.fit(&data, &mut Outputs { checkpoints, log });
    let r = &cfg.run;
    let what = format!(
        "training at --batch-size {} and --eval-batch-size {}",
        r.batch_size, r.eval_batch_size
    );
    run.map_err(|e| explain_out_of_memory(e, &what, device))
}

/// A run in progress: the model and its optimizer, where the run is, and the schedules that
/// are pure functions of that position.
#[derive(Debug)]
pub struct Trainer<'a> {
    cfg: &'a TrainConfig,
    pub model: ResNet,
    pub optimizer: Optimizer,
    pub state: RunState,
    schedule: LrSchedule,
    keep: KeepSchedule,
    precise_bn: PreciseBn,
    device: Device,
}

impl<'a> Trainer<'a> {
    /// A fresh network for `cfg` and `classes` classes on the CPU (convolutions and linear layers
    /// Xavier-initialised from the run's seed), its optimizer state zero, at step 0; an epoch is
    /// `steps_per_epoch` steps.
    ///
    /// # Errors
    /// A network the settings cannot build.
    pub fn new(cfg: &'a TrainConfig, classes: usize, steps_per_epoch: u64) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
        let mut model = ResNet::new(&state::net_spec(cfg, classes, 0), &mut rng)?;
        model.set_precision(cfg.run.precision.into());
        let optimizer = Optimizer::new(cfg.optimizer.rule, &mut model);
        let o = &cfg.optimizer;
        let schedule = LrSchedule {
            kind: o.schedule,
            base_lr: o.lr,
            decay: o.lr_decay,
            steps_per_epoch,
            epochs: cfg.run.epochs,
            warmup_steps: o.warmup_epochs * steps_per_epoch,
        };
        Ok(Trainer {
            cfg,
            model,
            optimizer,
            state: RunState::new(),
            schedule,
            keep: state::keep_schedule(cfg),
            precise_bn: PreciseBn::new(cfg),
            device: Device::Cpu,
        })
    }

    /// Moves the model and the optimizer state to `device`; batches follow them there.
    ///
    /// # Errors
    /// The GPU cannot be opened or a copy fails.
    pub fn to_device(&mut self, device: Device) -> anyhow::Result<()> {
        let moved = (self.model.to_device(device).map_err(Error::from))
            .and_then(|()| self.optimizer.to_device(&mut self.model, device));
        let what = "the model and its optimizer state";
        moved.map_err(|e| explain_out_of_memory(e.into(), what, device))?;
        self.device = device;
        Ok(())
    }

    /// The forward pass's context for the step the run is on: training, masks keyed by the
    /// run's seed and this step.
    pub fn context(&self) -> ForwardCtx {
        ForwardCtx::train(self.cfg.run.seed, self.state.step)
    }

    /// Runs epochs from the run's position until the last one, the early-stopping rule, the step
    /// limit or Ctrl-C. After each epoch: evaluation, `metrics.csv` and its line, the `last` and
    /// `best` checkpoints, plots. At the end: plots and the grid of test images.
    ///
    /// # Errors
    /// A diverged step (naming it and where), or a file that cannot be written.
    pub fn fit(&mut self, data: &Data, out: &mut Outputs) -> anyhow::Result<Outcome> {
        while self.state.epoch < self.cfg.run.epochs {
            let started = Instant::now();
            let lr = match self.epoch(data, out)? {
                EpochEnd::Trained { lr } => lr,
                EpochEnd::Stopped(outcome) => return self.finish(outcome, data, out),
            };
            let (record, notes) = self.evaluate(data, lr, started)?;
            out.log.epoch(&record, &notes)?;
            self.state.end_epoch(record.test_loss);
            let top1 = record.test_top1;
            let (model, optimizer) = (&mut self.model, &mut self.optimizer);
            out.checkpoints
                .save_epoch(model, optimizer, &self.state, top1)?;
            out.log.plots()?;
            if self.state.should_stop(self.cfg.run.patience) {
                eprintln!(
                    "early stop: the test loss rose in each of the last {} epochs",
                    self.cfg.run.patience
                );
                return self.finish(Outcome::EarlyStopped, data, out);
            }
        }
        self.finish(Outcome::Finished, data, out)
    }

    /// Trains the current epoch from the run's position in it, on `data`'s batches: a step per
    /// batch, a log line every `--log-every` steps, the step limit and Ctrl-C checked after each
    /// step, and `last.safetensors` written mid-epoch when `--checkpoint-every` asks. The epoch's running loss and correct count stay on the device (a
    /// [`LossTally`]) and are read into the run state only when the loop logs, saves or ends.
    ///
    /// # Errors
    /// A diverged step (the message names the last good checkpoint), or a batch or file error.
    pub fn epoch(&mut self, data: &Data, out: &mut Outputs) -> anyhow::Result<EpochEnd> {
        let keep_prob = self.keep.keep(self.state.epoch);
        self.model.set_block_keep(keep_prob);
        let mut progress = out.log.start_epoch(&self.state);
        let (sum, correct) = (self.state.epoch_loss_sum, self.state.epoch_correct);
        let mut tally = LossTally::new(self.device, sum, correct)?;
        // The rate of the epoch's last step so far: when a resumed run finds no batch left in
        // this epoch (it was stopped right after the last one), its metrics row must still carry
        // this epoch's rate, not the next step's.
        let mut lr = match self.state.batch_in_epoch {
            0 => self.schedule.lr(self.state.step),
            _ => self.schedule.lr(self.state.step - 1),
        };
        for batch in data
            .batches
            .epoch(self.state.epoch, self.state.batch_in_epoch)?
        {
            let batch = batch?;
            lr = self.schedule.lr(self.state.step);
            let n = batch.fine.len();
            let stepped = self.step(batch, lr, &mut tally);
            if let Err(diverged) = stepped.map_err(|e| self.out_of_memory(e))? {
                let err = self.diagnose(diverged, &tally, data.batches);
                return Err(err.context(out.checkpoints.diverged_note()));
            }
            progress.stepped(n);
            if self.state.step.is_multiple_of(self.cfg.run.log_every) {
                let last = self.read_tally(&tally)?;
                out.log
                    .step(&progress, &self.state, &last, n, lr, keep_prob)?;
            }
            if let Some(outcome) = self.stop_requested() {
                progress.finish();
                self.read_tally(&tally)?;
                self.save_stopped(outcome, &mut out.checkpoints)?;
                return Ok(EpochEnd::Stopped(outcome));
            }
            let epoch_ends = self.state.batch_in_epoch as u64 == data.batches.per_epoch();
            if !epoch_ends && out.checkpoints.due(self.state.step) {
                self.save_mid_epoch(&tally, out, &progress)?;
            }
        }
        progress.finish();
        self.read_tally(&tally)?;
        Ok(EpochEnd::Trained { lr })
    }

    /// One optimizer step on `batch` at learning rate `lr`: forward in training mode (masks keyed
    /// by the run's seed and this step), softmax cross-entropy into `tally`, backward by hand
    /// through every layer, then the optimizer (clip by global norm, update, zero the
    /// gradients); the run's position moves on by one step.
    ///
    /// Returns `Ok(Err(Diverged))`, having updated nothing, when the loss is not finite (read on
    /// the CPU, where it costs nothing, before the backward) or the optimizer refuses a
    /// gradient (on a device a non-finite loss shows up there); see [`Trainer::diagnose`].
    ///
    /// # Errors
    /// A layer or kernel error.
    pub fn step(
        &mut self,
        batch: Batch,
        lr: f64,
        tally: &mut LossTally,
    ) -> anyhow::Result<Result<(), Diverged>> {
        let n = batch.fine.len();
        let x = into_device(batch.images, self.device)?;
        let (logits, cache) = self.model.forward(x, self.context())?;
        let ce = SoftmaxCrossEntropy.forward_tallied(&logits, &batch.fine, tally)?;
        if tally.is_host() && !tally.read()?.last_loss.is_finite() {
            return Ok(Err(Diverged { refusal: None }));
        }
        let dlogits = SoftmaxCrossEntropy.backward(ce)?;
        self.model.backward(&dlogits, cache)?;
        let clip_norm = self.cfg.optimizer.clip_norm as f32;
        if let Err(refusal) = self.optimizer.step(&mut self.model, lr as f32, clip_norm) {
            return Ok(Err(Diverged {
                refusal: Some(refusal),
            }));
        }
        self.state.advance(n);
        Ok(Ok(()))
    }

    /// The error a diverged step stops the run with. A non-finite loss is named with the first
    /// stage of the forward whose output is not finite (the step's batch is a pure function of
    /// its position in `batches`, so it is built again and run through the same forward walk,
    /// checking each stage); otherwise the optimizer's refusal, naming the first parameter whose
    /// gradient is not finite.
    pub fn diagnose(
        &mut self,
        diverged: Diverged,
        tally: &LossTally,
        batches: &TrainBatches,
    ) -> anyhow::Error {
        match (self.non_finite_loss(tally, batches), diverged.refusal) {
            (Ok(Some(loss)), _) => loss.into(),
            (Ok(None), Some(refusal)) => refusal.into(),
            (Ok(None), None) => {
                Error::invalid("training step", "the loss was read as not finite").into()
            }
            (Err(e), _) => e,
        }
    }

    /// [`Error::NonFinite`] for the loss of the step the run is on, naming the first non-finite
    /// stage of its forward; `None` when that loss is finite.
    fn non_finite_loss(
        &mut self,
        tally: &LossTally,
        batches: &TrainBatches,
    ) -> anyhow::Result<Option<Error>> {
        let loss = tally.read()?.last_loss;
        if loss.is_finite() {
            return Ok(None);
        }
        let again = batches.batch(self.state.epoch, self.state.batch_in_epoch)?;
        let x = into_device(again.images, self.device)?;
        let what = match self.model.first_non_finite_stage(x, self.context())? {
            Some(stage) => format!("the training loss (first non-finite output: {stage})"),
            None => "the training loss".into(),
        };
        Ok(Some(Error::NonFinite {
            step: self.state.step + 1,
            what,
            value: loss as f64,
        }))
    }

    /// `last.safetensors` in the middle of an epoch (`--checkpoint-every`), with the epoch's
    /// running sums read from `tally` so that a resume continues them exactly; a line says so.
    fn save_mid_epoch(
        &mut self,
        tally: &LossTally,
        out: &mut Outputs,
        progress: &EpochProgress,
    ) -> anyhow::Result<()> {
        self.read_tally(tally)?;
        let started = Instant::now();
        let (model, optimizer) = (&mut self.model, &mut self.optimizer);
        out.checkpoints.save_last(model, optimizer, &self.state)?;
        let last = out.checkpoints.last();
        out.log
            .checkpointed(progress, &self.state, &last, started.elapsed());
        Ok(())
    }

    /// When the run stops before an epoch's end (`outcome`): `last.safetensors`, and a line
    /// saying why and where.
    fn save_stopped(
        &mut self,
        outcome: Outcome,
        checkpoints: &mut Checkpoints,
    ) -> anyhow::Result<()> {
        checkpoints.save_last(&mut self.model, &mut self.optimizer, &self.state)?;
        let why = match outcome {
            Outcome::Interrupted => "interrupted",
            _ => "step limit reached",
        };
        let last = checkpoints.last();
        eprintln!(
            "{why} at step {}: checkpoint {}",
            self.state.step,
            last.display()
        );
        Ok(())
    }

    /// `err`, explained if a training step ran out of GPU memory.
    fn out_of_memory(&self, err: anyhow::Error) -> anyhow::Error {
        let what = format!(
            "a training step at --batch-size {}",
            self.cfg.run.batch_size
        );
        explain_out_of_memory(err, &what, self.device)
    }

    /// The step limit or Ctrl-C, when either says the run stops now.
    fn stop_requested(&self) -> Option<Outcome> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            Some(Outcome::Interrupted)
        } else if self.cfg.run.max_steps.is_some_and(|m| self.state.step >= m) {
            Some(Outcome::StepLimit)
        } else {
            None
        }
    }

    /// Reads the tally (a host read on a device) into the epoch's running sums of the run state;
    /// returns it.
    fn read_tally(&mut self, tally: &LossTally) -> anyhow::Result<TallyReport> {
        let r = tally.read()?;
        self.state.epoch_loss_sum = r.loss_sum;
        self.state.epoch_correct = r.correct;
        Ok(r)
    }

    /// After an epoch's steps: precise batch norm when due, then the test set (and with
    /// `--eval-train` the whole training set) in evaluation mode, as the epoch's row of
    /// `metrics.csv`; `lr` is its last step's rate and `started` when it began. Returns the row
    /// and what the epoch line says beside it.
    fn evaluate(
        &mut self,
        data: &Data,
        lr: f64,
        started: Instant,
    ) -> anyhow::Result<(EpochRecord, EvalNotes)> {
        let (epoch, step) = (self.state.epoch, self.state.step);
        let bn = self
            .precise_bn
            .prepare(&mut self.model, data.batches, epoch, step)?;
        let batch = self.cfg.run.eval_batch_size;
        let mut on = |split: &Arc<Split>| evaluate(&mut self.model, split, batch, false, |_| {});
        let test = on(&data.dataset.test)?;
        let train = if self.cfg.run.eval_train {
            Some(on(&data.dataset.train)?)
        } else {
            None
        };
        let (train_loss, train_acc) = self.state.epoch_means();
        let record = EpochRecord {
            epoch: self.state.epoch + 1,
            step: self.state.step,
            train_loss,
            train_acc,
            train_eval_loss: train.as_ref().map(|r| r.loss),
            train_eval_acc: train.as_ref().map(|r| r.top1),
            test_loss: test.loss,
            test_top1: test.top1,
            test_top5: test.top5,
            lr,
            keep_prob: self.keep.keep(self.state.epoch) as f64,
            seconds: started.elapsed().as_secs_f64(),
            memory: MemoryUse::settled(self.device),
        };
        let notes = EvalNotes {
            test_images: test.count,
            bn,
        };
        Ok((record, notes))
    }

    /// The end of a run: plots, the grid of test images titled with predicted and true classes,
    /// and the results: the last epoch's, and the epoch `best.safetensors` holds.
    fn finish(&mut self, outcome: Outcome, data: &Data, out: &Outputs) -> anyhow::Result<Outcome> {
        out.log.finish(&mut self.model, data.dataset)?;
        out.log.results(out.checkpoints.best())?;
        Ok(outcome)
    }
}

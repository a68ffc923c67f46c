//! `trainer train`: the training loop.
//!
//! Each step: forward in training mode (batch statistics, dropout and DropBlock masks keyed by
//! the run's seed and the step), softmax cross-entropy, backward by hand through every layer, then
//! the optimizer (clip by global norm, update, zero gradients). After each epoch: evaluation on the
//! test set (and the training set with `--eval-train`), `metrics.csv`, plots, the `last` and `best`
//! checkpoints, and the seed's early-stopping rule.
//!
//! A run is a pure function of its settings: the shuffle and augmentation are keyed by (seed,
//! epoch, image), the masks by (seed, step, layer), so `--resume` from any checkpoint continues
//! bit-identically, even from the middle of an epoch.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cifar_data::{batch_at, BatchLoader, Dataset, LastBatch, LoaderConfig, Split};
use indicatif::{ProgressBar, ProgressStyle};
use kernels::softmax_ce::{LossTally, TallyReport};
use nn_layers::{into_device, ForwardCtx, SoftmaxCrossEntropy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tensor_core::Device;

use crate::cli::TrainArgs;
use crate::config::{TrainConfig, CONFIG_FILE};
use crate::error::Error;
use crate::evaluate::{evaluate, top_k, EvalReport};
use crate::grid::{save_grid, GridImage, GridLayout};
use crate::metrics::{self, EpochRecord, StepRecord, METRICS_FILE, STEPS_FILE};
use crate::model::ResNet;
use crate::optim::Optimizer;
use crate::schedule::LrSchedule;
use crate::state::{self, RunState};

use super::setup_runtime;

/// Checkpoint file names in the run directory.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";
/// The test-image grid drawn at the end of a run.
pub const GRID_FILE: &str = "test_predictions.png";

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

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    setup_runtime(&args.runtime)?;
    let mut cfg = args.config()?;
    let resume = match &args.run.resume {
        Some(path) => {
            let loaded = state::load(path).with_context(|| {
                format!("--resume {}: cannot read the checkpoint", path.display())
            })?;
            // The run continues with the settings it started with; only its length, the device and
            // the threads come from this command line.
            let mut saved = loaded.config.clone();
            saved.run.epochs = cfg.run.epochs;
            saved.run.max_steps = cfg.run.max_steps;
            saved.run.device = cfg.run.device;
            saved.run.threads = cfg.run.threads;
            cfg = saved;
            eprintln!(
                "resuming {} at step {}, epoch {} (batch {}), with its saved settings",
                path.display(),
                loaded.state.step,
                loaded.state.epoch + 1,
                loaded.state.batch_in_epoch
            );
            Some((path.clone(), loaded))
        }
        None => None,
    };
    let dataset = crate::data::load(&cfg.data)?;
    let out = &args.run.out;
    let outcome = train(&cfg, &dataset, out, resume, args.run.init.as_deref())?;
    eprintln!("run ended: {outcome:?}; outputs in {}", out.display());
    Ok(())
}

/// Trains `cfg` on `dataset`, writing everything into `out`.
pub fn train(
    cfg: &TrainConfig,
    dataset: &Dataset,
    out: &Path,
    resume: Option<(PathBuf, state::Loaded)>,
    init: Option<&Path>,
) -> anyhow::Result<Outcome> {
    let classes = dataset.fine_names.len();
    let device = super::resolve_device(cfg.run.device)?;
    let train_cfg = LoaderConfig {
        last: LastBatch::Drop,
        ..LoaderConfig::train(cfg.run.batch_size, cfg.data.augment.into(), cfg.run.seed)
    };
    let steps_per_epoch = train_cfg.num_batches(dataset.train.len()) as u64;
    if steps_per_epoch == 0 {
        bail!(
            "--batch-size {} is larger than the training set ({} images)",
            cfg.run.batch_size,
            dataset.train.len()
        );
    }

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.run.seed);
    let mut model = ResNet::new(&state::net_spec(cfg, classes, 0), &mut rng)?;
    let mut optimizer = Optimizer::new(cfg.optimizer.rule, &mut model);
    let mut st = RunState::new();
    if let Some((path, loaded)) = &resume {
        check_classes(path, &loaded.class_names, &dataset.fine_names)?;
        state::load_weights(path, &loaded.checkpoint, &mut model)?;
        state::load_optimizer(path, &loaded.checkpoint, &mut model, &mut optimizer)?;
        st = loaded.state.clone();
    } else if let Some(path) = init {
        let loaded = state::load(path)
            .with_context(|| format!("--init {}: cannot read the checkpoint", path.display()))?;
        check_classes(path, &loaded.class_names, &dataset.fine_names)?;
        state::load_weights(path, &loaded.checkpoint, &mut model)
            .with_context(|| format!("--init {}", path.display()))?;
        eprintln!("initialised the weights from {}", path.display());
    }
    // Checkpoints load into the CPU model above; the run then moves model and optimizer state to
    // the device, and checkpoints are written from host copies (state::save reads back).
    model.to_device(device)?;
    optimizer.to_device(&mut model, device)?;
    eprintln!(
        "model: widths {:?}, hidden {}, {} classes, {} parameters, {:.2} GFLOP per image forward",
        cfg.model.widths,
        cfg.model.hidden,
        classes,
        model.param_count(),
        model.forward_flops_per_image() as f64 / 1e9
    );

    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    cfg.save(&out.join(CONFIG_FILE))?;
    if resume.is_some() {
        metrics::truncate_after::<EpochRecord>(&out.join(METRICS_FILE), st.epoch)?;
        metrics::truncate_after::<StepRecord>(&out.join(STEPS_FILE), st.step)?;
    } else {
        for f in [METRICS_FILE, STEPS_FILE] {
            remove_if_present(&out.join(f))?;
        }
    }
    // A second handler (tests run several trainings in one process) is refused; the first stays.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));

    let schedule = LrSchedule {
        kind: cfg.optimizer.schedule,
        base_lr: cfg.optimizer.lr,
        decay: cfg.optimizer.lr_decay,
        steps_per_epoch,
        epochs: cfg.run.epochs,
        warmup_steps: cfg.optimizer.warmup_epochs * steps_per_epoch,
    };
    let keep = state::keep_schedule(cfg);
    let interactive = std::io::stderr().is_terminal();
    let mut best_top1 = f64::NEG_INFINITY;

    while st.epoch < cfg.run.epochs {
        let epoch_start = Instant::now();
        let keep_prob = keep.keep(st.epoch);
        model.set_block_keep(keep_prob);
        let loader = BatchLoader::new(
            dataset.train.clone(),
            train_cfg,
            st.epoch,
            st.batch_in_epoch,
        )?;
        let bar = progress_bar(steps_per_epoch, interactive, st.epoch, cfg.run.epochs);
        bar.set_position(st.batch_in_epoch as u64);
        let mut lr = schedule.lr(st.step);
        let mut images = 0usize;
        // The epoch's running loss and correct count live on the device and are read only when
        // the loop logs, saves or ends the epoch.
        let mut tally = LossTally::new(device, st.epoch_loss_sum, st.epoch_correct)?;
        for batch in loader {
            let batch = batch?;
            lr = schedule.lr(st.step);
            let n = batch.fine.len();
            let ctx = ForwardCtx::train(cfg.run.seed, st.step);
            let (logits, cache) = model.forward(into_device(batch.images, device)?, ctx)?;
            let ce = SoftmaxCrossEntropy.forward_tallied(&logits, &batch.fine, &mut tally)?;
            // On the CPU the loss costs nothing to read, so a non-finite one stops the run before
            // its backward. On a device a non-finite loss makes non-finite gradients, which the
            // optimizer refuses below (updating nothing): the loss is read then.
            if tally.is_host() {
                check_loss(
                    &tally, &mut model, dataset, &train_cfg, cfg, &st, device, out,
                )?;
            }
            let dlogits = SoftmaxCrossEntropy.backward(ce)?;
            model.backward(&dlogits, cache)?;
            let stepped = optimizer.step(&mut model, lr as f32, cfg.optimizer.clip_norm as f32);
            if stepped.is_err() {
                check_loss(
                    &tally, &mut model, dataset, &train_cfg, cfg, &st, device, out,
                )?;
            }
            stepped.context(keep_note(out))?;
            st.step += 1;
            st.batch_in_epoch += 1;
            st.epoch_seen += n as u64;
            images += n;
            bar.inc(1);
            if st.step % cfg.run.log_every == 0 {
                let last = read_tally(&tally, &mut st)?;
                let (loss, acc) = (last.last_loss, last.last_correct as f64 / n as f64);
                metrics::append(
                    &out.join(STEPS_FILE),
                    &StepRecord {
                        step: st.step,
                        loss: loss as f64,
                        acc,
                        lr,
                        keep_prob: keep_prob as f64,
                    },
                )?;
                let speed = images as f64 / epoch_start.elapsed().as_secs_f64();
                let msg = format!(
                    "loss {loss:.4} acc {:5.1}% lr {lr:.2e} keep {keep_prob:.3} {speed:.1} img/s",
                    100.0 * acc
                );
                if interactive {
                    bar.set_message(msg);
                } else {
                    eprintln!("epoch {} step {}: {msg}", st.epoch + 1, st.step);
                }
            }
            let limit = cfg.run.max_steps.is_some_and(|m| st.step >= m);
            let interrupted = INTERRUPTED.load(Ordering::SeqCst);
            if limit || interrupted {
                bar.finish_and_clear();
                read_tally(&tally, &mut st)?;
                state::save(
                    &out.join(LAST_CHECKPOINT),
                    &mut model,
                    Some(&mut optimizer),
                    cfg,
                    &dataset.fine_names,
                    &st,
                )?;
                eprintln!(
                    "{} at step {}: checkpoint {}",
                    if interrupted {
                        "interrupted"
                    } else {
                        "step limit reached"
                    },
                    st.step,
                    out.join(LAST_CHECKPOINT).display()
                );
                finish(out, &mut model, dataset)?;
                return Ok(if interrupted {
                    Outcome::Interrupted
                } else {
                    Outcome::StepLimit
                });
            }
        }
        bar.finish_and_clear();
        read_tally(&tally, &mut st)?;

        let test = evaluate(
            &mut model,
            &dataset.test,
            cfg.run.eval_batch_size,
            false,
            |_| {},
        )?;
        let train_eval = if cfg.run.eval_train {
            Some(evaluate(
                &mut model,
                &dataset.train,
                cfg.run.eval_batch_size,
                false,
                |_| {},
            )?)
        } else {
            None
        };
        let record = EpochRecord {
            epoch: st.epoch + 1,
            step: st.step,
            train_loss: st.epoch_loss_sum / st.batch_in_epoch.max(1) as f64,
            train_acc: st.epoch_correct as f64 / st.epoch_seen.max(1) as f64,
            train_eval_loss: train_eval.as_ref().map(|r| r.loss),
            train_eval_acc: train_eval.as_ref().map(|r| r.top1),
            test_loss: test.loss,
            test_top1: test.top1,
            test_top5: test.top5,
            lr,
            keep_prob: keep_prob as f64,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        metrics::append(&out.join(METRICS_FILE), &record)?;
        log_epoch(&record, cfg.run.epochs, &test);

        st.epoch += 1;
        st.batch_in_epoch = 0;
        st.epoch_loss_sum = 0.0;
        st.epoch_correct = 0;
        st.epoch_seen = 0;
        st.test_losses.push(test.loss);
        let last = out.join(LAST_CHECKPOINT);
        state::save(
            &last,
            &mut model,
            Some(&mut optimizer),
            cfg,
            &dataset.fine_names,
            &st,
        )?;
        if test.top1 > best_top1 {
            best_top1 = test.top1;
            let best = out.join(BEST_CHECKPOINT);
            std::fs::copy(&last, &best)
                .with_context(|| format!("copying {} to {}", last.display(), best.display()))?;
        }
        metrics::write_plots(out)?;
        if st.should_stop(cfg.run.patience) {
            eprintln!(
                "early stop: the test loss rose in each of the last {} epochs",
                cfg.run.patience
            );
            finish(out, &mut model, dataset)?;
            return Ok(Outcome::EarlyStopped);
        }
    }
    finish(out, &mut model, dataset)?;
    Ok(Outcome::Finished)
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

fn keep_note(out: &Path) -> String {
    format!(
        "training diverged; the last good checkpoint (if any) is {}",
        out.join(LAST_CHECKPOINT).display()
    )
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Reads the tally (a host read on a device) into the epoch's running sums of `st`; returns it.
fn read_tally(tally: &LossTally, st: &mut RunState) -> anyhow::Result<TallyReport> {
    let r = tally.read()?;
    st.epoch_loss_sum = r.loss_sum;
    st.epoch_correct = r.correct;
    Ok(r)
}

/// Refuses a non-finite loss of the step `st` is on: the batch is a pure function of its
/// position, so it is rebuilt to find the first non-finite stage of the forward.
#[allow(clippy::too_many_arguments)]
fn check_loss(
    tally: &LossTally,
    model: &mut ResNet,
    dataset: &Dataset,
    train_cfg: &LoaderConfig,
    cfg: &TrainConfig,
    st: &RunState,
    device: Device,
    out: &Path,
) -> anyhow::Result<()> {
    let loss = tally.read()?.last_loss;
    if loss.is_finite() {
        return Ok(());
    }
    let again = batch_at(&dataset.train, train_cfg, st.epoch, st.batch_in_epoch)?;
    let stage = model.first_non_finite_stage(
        into_device(again.images, device)?,
        ForwardCtx::train(cfg.run.seed, st.step),
    )?;
    let what = match stage {
        Some(stage) => format!("the training loss (first non-finite output: {stage})"),
        None => "the training loss".into(),
    };
    Err(Error::NonFinite {
        step: st.step + 1,
        what,
        value: loss as f64,
    })
    .context(keep_note(out))
}

fn progress_bar(len: u64, interactive: bool, epoch: u64, epochs: u64) -> ProgressBar {
    if !interactive {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

fn log_epoch(r: &EpochRecord, epochs: u64, test: &EvalReport) {
    let train_eval = match (r.train_eval_loss, r.train_eval_acc) {
        (Some(l), Some(a)) => format!(" | train set loss {l:.4} acc {:.2}%", 100.0 * a),
        _ => String::new(),
    };
    eprintln!(
        "epoch {}/{epochs}: train loss {:.4} acc {:.2}%{train_eval} | test loss {:.4} top-1 \
         {:.2}% top-5 {:.2}% ({} images) | lr {:.2e} keep {:.3} | {:.1}s",
        r.epoch,
        r.train_loss,
        100.0 * r.train_acc,
        r.test_loss,
        100.0 * r.test_top1,
        100.0 * r.test_top5,
        test.count,
        r.lr,
        r.keep_prob,
        r.seconds
    );
}

/// End of a run: plots, and a grid of test images titled with predicted and true classes.
fn finish(out: &Path, model: &mut ResNet, dataset: &Dataset) -> anyhow::Result<()> {
    metrics::write_plots(out)?;
    let shown = dataset.test.len().min(16);
    if shown == 0 {
        return Ok(());
    }
    let first = Arc::new(first_images(&dataset.test, shown)?);
    let report = evaluate(model, &first, shown, true, |_| {})?;
    let probs = report.probabilities.as_deref().unwrap_or_default();
    let classes = dataset.fine_names.len();
    let predicted: Vec<usize> = probs
        .chunks_exact(classes)
        .map(|r| top_k(r, 1)[0])
        .collect();
    let images: Vec<GridImage> = (0..shown)
        .map(|i| GridImage {
            chw: dataset.test.image(i),
            predicted: &dataset.fine_names[predicted[i]],
            truth: &dataset.fine_names[dataset.test.fine()[i] as usize],
        })
        .collect();
    save_grid(&out.join(GRID_FILE), &images, GridLayout::default())?;
    Ok(())
}

/// The first `n` images of a split, as a split of their own.
fn first_images(split: &Split, n: usize) -> anyhow::Result<Split> {
    let images = (0..n)
        .flat_map(|i| split.image(i).iter().copied())
        .collect();
    Ok(Split::new(images, split.fine()[..n].to_vec(), None)?)
}

//! What a run reports as it goes: a progress bar per epoch on a terminal (a line per logged step
//! otherwise), `steps.csv` every `--log-every` steps, `metrics.csv` and a line per epoch (saying
//! which batch-norm statistics evaluated), the plots, and at the end a grid of test images titled
//! with predicted and true classes and the results on stdout: the last epoch's, as the seed
//! reported them, and the epoch of `best.safetensors`, labelled as chosen on the test set. The CSV
//! formats and the plots are [`crate::metrics`]'.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cifar_data::{Dataset, Split};
use indicatif::{ProgressBar, ProgressStyle};
use kernels::softmax_ce::TallyReport;

use crate::config::TrainConfig;
use crate::evaluate::{evaluate, top_k};
use crate::grid::{save_grid, Caption, GridImage, GridLayout};
use crate::metrics::{self, EpochRecord, StepRecord, METRICS_FILE, STEPS_FILE};
use crate::model::ResNet;
use crate::precise_bn::BnStatistics;
use crate::state::RunState;

use super::checkpoints::{BestEpoch, BEST_CHECKPOINT, LAST_CHECKPOINT};

/// The test-image grid drawn at the end of a run.
pub const GRID_FILE: &str = "test_predictions.png";

/// The log files of one run directory and how the terminal shows progress.
#[derive(Debug)]
pub struct TrainLog {
    dir: PathBuf,
    /// Whether stderr is a terminal: a progress bar, else a line per logged step.
    interactive: bool,
    epochs: u64,
    steps_per_epoch: u64,
}

/// What an epoch's line says beside its row of `metrics.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalNotes {
    /// Test images evaluated.
    pub test_images: usize,
    /// The batch-norm statistics the evaluation normalised with.
    pub bn: BnStatistics,
}

/// One epoch's progress: its bar (hidden off a terminal) and its speed so far.
#[derive(Debug)]
pub struct EpochProgress {
    bar: ProgressBar,
    started: Instant,
    /// Images trained on in this epoch by this process.
    images: usize,
}

impl EpochProgress {
    /// A step on `images` images done.
    pub fn stepped(&mut self, images: usize) {
        self.images += images;
        self.bar.inc(1);
    }

    /// Training speed so far, in images per second.
    fn speed(&self) -> f64 {
        self.images as f64 / self.started.elapsed().as_secs_f64()
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A line on stderr: the network's size and cost.
pub fn model_summary(cfg: &TrainConfig, classes: usize, model: &mut ResNet) {
    eprintln!(
        "model: widths {:?}, hidden {}, {} classes, {} parameters, {:.2} GFLOP per image forward",
        cfg.model.widths,
        cfg.model.hidden,
        classes,
        model.param_count(),
        model.forward_flops_per_image() as f64 / 1e9
    );
}

/// `path` removed; absent already is fine.
fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

impl TrainLog {
    /// The log of the run in `dir` (which exists), of `steps_per_epoch` steps an epoch. A
    /// resumed run (`resumed` is where it resumes) keeps the rows of its CSV files up to that
    /// point, dropping any written after the checkpoint; a new run starts them afresh.
    ///
    /// # Errors
    /// A file that cannot be read, rewritten or removed.
    pub fn create(
        dir: &Path,
        cfg: &TrainConfig,
        steps_per_epoch: u64,
        resumed: Option<&RunState>,
    ) -> anyhow::Result<TrainLog> {
        let (metrics, steps) = (dir.join(METRICS_FILE), dir.join(STEPS_FILE));
        match resumed {
            Some(st) => {
                metrics::truncate_after::<EpochRecord>(&metrics, st.epoch)?;
                metrics::truncate_after::<StepRecord>(&steps, st.step)?;
            }
            None => {
                remove_if_present(&metrics)?;
                remove_if_present(&steps)?;
            }
        }
        Ok(TrainLog {
            dir: dir.to_path_buf(),
            interactive: std::io::stderr().is_terminal(),
            epochs: cfg.run.epochs,
            steps_per_epoch,
        })
    }

    /// The rows of `metrics.csv` so far: the finished epochs (of a resumed run, those up to its
    /// checkpoint).
    ///
    /// # Errors
    /// A `metrics.csv` that cannot be read.
    pub fn history(&self) -> anyhow::Result<Vec<EpochRecord>> {
        Ok(metrics::read(&self.dir.join(METRICS_FILE))?)
    }

    /// The progress of the epoch `st` is in, from its position in it.
    pub fn start_epoch(&self, st: &RunState) -> EpochProgress {
        let bar = self.progress_bar(st);
        bar.set_position(st.batch_in_epoch as u64);
        EpochProgress {
            bar,
            started: Instant::now(),
            images: 0,
        }
    }

    fn progress_bar(&self, st: &RunState) -> ProgressBar {
        if !self.interactive {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(self.steps_per_epoch);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{}", st.epoch + 1, self.epochs));
        bar
    }

    /// A logged step on `images` images: a row of `steps.csv`, and the minibatch's loss and
    /// accuracy, the learning rate `lr`, DropBlock's `keep_prob` and the speed on the bar (or a
    /// line off a terminal). `last` is the tally just read; `st` is past the step.
    ///
    /// # Errors
    /// `steps.csv` cannot be written.
    pub fn step(
        &self,
        progress: &EpochProgress,
        st: &RunState,
        last: &TallyReport,
        images: usize,
        lr: f64,
        keep_prob: f32,
    ) -> anyhow::Result<()> {
        let loss = last.last_loss;
        let acc = last.last_correct as f64 / images as f64;
        let record = StepRecord {
            step: st.step,
            loss: loss as f64,
            acc,
            lr,
            keep_prob: keep_prob as f64,
        };
        metrics::append(&self.dir.join(STEPS_FILE), &record)?;
        let msg = format!(
            "loss {loss:.4} acc {:5.1}% lr {lr:.2e} keep {keep_prob:.3} {:.1} img/s",
            100.0 * acc,
            progress.speed()
        );
        if self.interactive {
            progress.bar.set_message(msg);
        } else {
            eprintln!("epoch {} step {}: {msg}", st.epoch + 1, st.step);
        }
        Ok(())
    }

    /// A checkpoint written mid-epoch to `path` in `took`: a line (above the bar on a
    /// terminal).
    pub fn checkpointed(
        &self,
        progress: &EpochProgress,
        st: &RunState,
        path: &Path,
        took: Duration,
    ) {
        let line = format!(
            "checkpoint at step {} (epoch {}, batch {}): {} written in {:.2}s",
            st.step,
            st.epoch + 1,
            st.batch_in_epoch,
            path.display(),
            took.as_secs_f64()
        );
        if self.interactive {
            progress.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// A finished epoch: its row of `metrics.csv` and a line on stderr, with `notes`.
    ///
    /// # Errors
    /// `metrics.csv` cannot be written.
    pub fn epoch(&self, r: &EpochRecord, notes: &EvalNotes) -> anyhow::Result<()> {
        metrics::append(&self.dir.join(METRICS_FILE), r)?;
        let train_eval = match (r.train_eval_loss, r.train_eval_acc) {
            (Some(l), Some(a)) => format!(" | train set loss {l:.4} acc {:.2}%", 100.0 * a),
            _ => String::new(),
        };
        let bn = notes
            .bn
            .note()
            .map(|n| format!(" | {n}"))
            .unwrap_or_default();
        eprintln!(
            "epoch {}/{}: train loss {:.4} acc {:.2}%{train_eval} | test loss {:.4} top-1 \
             {:.2}% top-5 {:.2}% ({} images) | lr {:.2e} keep {:.3} | {:.1}s{bn}",
            r.epoch,
            self.epochs,
            r.train_loss,
            100.0 * r.train_acc,
            r.test_loss,
            100.0 * r.test_top1,
            100.0 * r.test_top5,
            notes.test_images,
            r.lr,
            r.keep_prob,
            r.seconds
        );
        Ok(())
    }

    /// The run's results on stdout: the last finished epoch's figures ([`final_line`]), and the
    /// epoch `best` that `best.safetensors` holds ([`best_line`]). Nothing before an epoch ends.
    ///
    /// # Errors
    /// A `metrics.csv` that cannot be read.
    pub fn results(&self, best: Option<BestEpoch>) -> anyhow::Result<()> {
        let Some(last) = self.history()?.pop() else {
            return Ok(());
        };
        println!("{}", final_line(&last));
        if let Some(b) = best {
            println!("{}", best_line(b));
        }
        Ok(())
    }

    /// Loss and accuracy plots from the CSV files, per epoch and per logged step.
    ///
    /// # Errors
    /// A CSV file that cannot be read or a plot that cannot be written.
    pub fn plots(&self) -> anyhow::Result<()> {
        metrics::write_plots(&self.dir)?;
        Ok(())
    }

    /// The end of a run: the plots, and a grid of the first test images titled with the
    /// predicted and the true class.
    ///
    /// # Errors
    /// A file that cannot be written, or an evaluation error.
    pub fn finish(&self, model: &mut ResNet, dataset: &Dataset) -> anyhow::Result<()> {
        self.plots()?;
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
                caption: Caption::Prediction {
                    predicted: &dataset.fine_names[predicted[i]],
                    truth: &dataset.fine_names[dataset.test.fine()[i] as usize],
                },
            })
            .collect();
        save_grid(&self.dir.join(GRID_FILE), &images, GridLayout::default())?;
        Ok(())
    }
}

/// `final (last epoch E, last.safetensors): train set loss L acc A% | test loss L top-1 A% top-5
/// A%`: the figures the seed reported (its 99.5% and 70.7% are its last epoch's train-set and
/// test accuracies).
pub fn final_line(r: &EpochRecord) -> String {
    let train = match (r.train_eval_loss, r.train_eval_acc) {
        (Some(l), Some(a)) => format!("train set loss {l:.4} acc {:.2}%", 100.0 * a),
        _ => "train set not evaluated (--eval-train off)".into(),
    };
    format!(
        "final (last epoch {}, {LAST_CHECKPOINT}): {train} | test loss {:.4} top-1 {:.2}% top-5 \
         {:.2}%",
        r.epoch,
        r.test_loss,
        100.0 * r.test_top1,
        100.0 * r.test_top5
    )
}

/// The line naming the epoch `best.safetensors` holds, labelled as chosen on the test set.
pub fn best_line(b: BestEpoch) -> String {
    format!(
        "{BEST_CHECKPOINT}: epoch {}, test top-1 {:.2}%, best on the test set: optimistic, since \
         the test set chose it (the seed's figures are the last epoch's)",
        b.epoch,
        100.0 * b.test_top1
    )
}

/// The first `n` images of a split, as a split of their own.
fn first_images(split: &Split, n: usize) -> anyhow::Result<Split> {
    let images = (0..n)
        .flat_map(|i| split.image(i).iter().copied())
        .collect();
    Ok(Split::new(images, split.fine()[..n].to_vec(), None)?)
}

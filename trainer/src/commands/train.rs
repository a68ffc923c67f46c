//! `trainer train`: the flags become the run's settings, `--resume` or `--init` say where it
//! starts, the dataset is loaded, and [`crate::training`] trains.
//!
//! Each step: forward in training mode (batch statistics, dropout and DropBlock masks keyed by
//! the run's seed and the step), softmax cross-entropy, backward by hand through every layer, then
//! the optimizer (clip by global norm, update, zero gradients). After each epoch: precise batch
//! norm when due, evaluation on the test set and the training set (`--eval-train`),
//! `metrics.csv`, plots, the `last` and `best` checkpoints, and the seed's early-stopping rule. At
//! the end, the results on stdout: the last epoch's (as the seed reported them) and `best`'s.

use crate::cli::TrainArgs;
use crate::training::{self, checkpoints::Start};

use super::setup_runtime;

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let device = setup_runtime(&args.runtime)?;
    eprintln!("device: {}", super::describe_device(device));
    let mut cfg = args.config()?;
    let start = match (&args.run.resume, &args.run.init) {
        (Some(path), _) => {
            let (start, saved) = Start::resume(path, &cfg)?;
            cfg = saved;
            // A checkpoint holds FP32 weights: it resumes in any mode.
            if let Some(precision) = args.runtime.precision {
                cfg.run.precision = precision;
            }
            start
        }
        (None, Some(path)) => Start::Init(path.clone()),
        (None, None) => Start::Fresh,
    };
    cfg.run.precision.check_device(device)?;
    let dataset = crate::data::load(&cfg.data)?;
    let out = &args.run.out;
    let outcome = training::run(&cfg, &dataset, out, start, device)?;
    eprintln!("run ended: {outcome:?}; outputs in {}", out.display());
    Ok(())
}

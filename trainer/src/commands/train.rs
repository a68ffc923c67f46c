//! `trainer train`: the flags become the run's settings, `--resume` or `--init` say where it
//! starts, the dataset is loaded, and [`crate::training`] trains.
//!
//! Each step: forward in training mode (batch statistics, dropout and DropBlock masks keyed by
//! the run's seed and the step), softmax cross-entropy, backward by hand through every layer, then
//! the optimizer (clip by global norm, update, zero gradients). After each epoch: evaluation on the
//! test set (and the training set with `--eval-train`), `metrics.csv`, plots, the `last` and `best`
//! checkpoints, and the seed's early-stopping rule.

use crate::cli::TrainArgs;
use crate::training::{self, checkpoints::Start};

use super::setup_runtime;

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let device = setup_runtime(&args.runtime)?;
    let mut cfg = args.config()?;
    let start = match (&args.run.resume, &args.run.init) {
        (Some(path), _) => {
            let (start, saved) = Start::resume(path, &cfg)?;
            cfg = saved;
            start
        }
        (None, Some(path)) => Start::Init(path.clone()),
        (None, None) => Start::Fresh,
    };
    let dataset = crate::data::load(&cfg.data)?;
    let out = &args.run.out;
    let outcome = training::run(&cfg, &dataset, out, start, device)?;
    eprintln!("run ended: {outcome:?}; outputs in {}", out.display());
    Ok(())
}

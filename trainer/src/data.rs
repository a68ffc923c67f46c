//! Finding the images a run trains and evaluates on: a CIFAR directory, or the synthetic dataset
//! generated in memory (the offline default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cifar_data::synth::{self, SynthConfig, SynthSplit};
use cifar_data::{Dataset, Format, Split};

use crate::config::{DataConfig, DatasetKind};
use crate::error::Result;

/// Where the `download` command puts datasets, and where `--dataset cifar100` looks by default.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Loads the dataset `cfg` describes, printing the counts to stderr.
///
/// # Errors
/// A missing or malformed dataset, with the path expected and the command that downloads it.
pub fn load(cfg: &DataConfig) -> Result<Dataset> {
    let dataset = match cfg.dataset {
        DatasetKind::Synthetic if cfg.dir.is_none() => synthetic(&SynthConfig {
            seed: cfg.synth_seed,
            train: cfg.synth_train,
            test: cfg.synth_test,
        })?,
        // A synthetic dataset written by `trainer synth` is in the CIFAR-100 layout.
        DatasetKind::Synthetic | DatasetKind::Cifar100 => {
            Dataset::load(&dir_or_default(cfg.dir.as_deref()), Format::Cifar100)?
        }
        DatasetKind::Cifar10 => {
            Dataset::load(&dir_or_default(cfg.dir.as_deref()), Format::Cifar10)?
        }
    };
    eprintln!("{dataset}");
    Ok(dataset)
}

fn dir_or_default(dir: Option<&Path>) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), Path::to_path_buf)
}

/// The synthetic dataset, generated in memory (about a second for the default size).
pub fn synthetic(cfg: &SynthConfig) -> Result<Dataset> {
    let split = |s| -> Result<Arc<Split>> {
        let r = synth::generate(cfg, s);
        let fine = r.fine.iter().map(|&l| l as u32).collect();
        let coarse = r.coarse.map(|c| c.iter().map(|&l| l as u32).collect());
        Ok(Arc::new(Split::new(r.images, fine, coarse)?))
    };
    Ok(Dataset {
        format: Format::Cifar100,
        dir: PathBuf::from(format!("<synthetic, seed {}>", cfg.seed)),
        train: split(SynthSplit::Train)?,
        test: split(SynthSplit::Test)?,
        fine_names: synth::fine_names(),
        coarse_names: Some(synth::coarse_names()),
    })
}

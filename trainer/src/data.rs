//! Finding the images a run trains and evaluates on: a CIFAR directory, or the synthetic dataset
//! generated in memory (the offline default), preprocessed once as the run says (the seed's
//! sharpening); and the training batches a run walks through ([`TrainBatches`], the data policy
//! the training loop follows).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cifar_data::synth::{self, SynthConfig, SynthSplit};
use cifar_data::{
    batch_at, Batch, BatchLoader, Dataset, Format, LastBatch, LoaderConfig, Preprocess, Split,
};

use crate::config::{DataConfig, DatasetKind, TrainConfig};
use crate::error::Result;

/// Where the `download` command puts datasets, and where `--dataset cifar100` looks by default.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Loads the dataset `cfg` describes and applies its preprocessing to both splits, printing the
/// counts to stderr.
///
/// # Errors
/// A missing or malformed dataset, with the path expected and the command that downloads it.
pub fn load(cfg: &DataConfig) -> Result<Dataset> {
    let mut dataset = load_raw(cfg)?;
    let preprocess = Preprocess::from(cfg.preprocess);
    dataset.preprocess(preprocess);
    match preprocess {
        Preprocess::Sharpen => eprintln!("{dataset}, sharpened (the seed's unsharp mask)"),
        Preprocess::None => eprintln!("{dataset}"),
    }
    Ok(dataset)
}

/// The dataset `cfg` describes, as the files store it (or as generated).
fn load_raw(cfg: &DataConfig) -> Result<Dataset> {
    Ok(match cfg.dataset {
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
    })
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

/// The training batches of a run: which images, in what order, augmented how. Each epoch is the
/// training split in a seeded shuffle, keyed by the seed alone for `--order fixed` (the same
/// order every epoch, the seed's) or by (seed, epoch) for `--order shuffle`, cut into batches of
/// the run's size (a last partial batch is dropped), each image augmented as its key (seed,
/// epoch, batch, image) says: any batch is a pure function of its position, so a run resumed
/// anywhere sees the very batches an uninterrupted one would have, and a batch can be built again
/// ([`TrainBatches::batch`]).
#[derive(Debug, Clone)]
pub struct TrainBatches {
    split: Arc<Split>,
    loader: LoaderConfig,
}

impl TrainBatches {
    /// The batches `cfg` describes over `split`.
    pub fn new(cfg: &TrainConfig, split: Arc<Split>) -> TrainBatches {
        let loader = LoaderConfig {
            last: LastBatch::Drop,
            order: cfg.data.order.into(),
            ..LoaderConfig::train(cfg.run.batch_size, cfg.data.augment.into(), cfg.run.seed)
        };
        TrainBatches { split, loader }
    }

    /// Batches (optimizer steps) in an epoch: 0 when the batch is larger than the split.
    pub fn per_epoch(&self) -> u64 {
        self.loader.num_batches(self.split.len()) as u64
    }

    /// The batches of epoch `epoch` from position `from` on, built ahead on a background thread.
    ///
    /// # Errors
    /// A start past the end of the epoch.
    pub fn epoch(&self, epoch: u64, from: usize) -> Result<BatchLoader> {
        Ok(BatchLoader::new(
            self.split.clone(),
            self.loader,
            epoch,
            from,
        )?)
    }

    /// Batch `position` of epoch `epoch` again, built in the calling thread.
    ///
    /// # Errors
    /// A position past the end of the epoch.
    pub fn batch(&self, epoch: u64, position: usize) -> Result<Batch> {
        Ok(batch_at(&self.split, &self.loader, epoch, position)?)
    }
}

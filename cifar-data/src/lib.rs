//! CIFAR-100 and CIFAR-10: the binary formats, download, augmentation, batching, and a synthetic
//! dataset in the CIFAR-100 layout for offline runs.
//!
//! Images stay `u8` in memory, (N, 3, 32, 32) planes as the files store them (after the optional
//! one-time [`Preprocess`]; the CIFAR-100 training set is 154 MB as bytes, 614 MB as `f32`); a batch
//! is gathered, augmented and normalised to `f32` only when it is needed, on a background thread
//! ([`BatchLoader`]).
//!
//! Shape legend: N batch, C = 3 colour planes (red, green, blue), H = W = 32.
//!
//! ```no_run
//! use cifar_data::{Augment, BatchLoader, Dataset, Format, LoaderConfig, Preprocess};
//! # fn main() -> cifar_data::Result<()> {
//! let mut data = Dataset::load("data".as_ref(), Format::Cifar100)?;
//! data.preprocess(Preprocess::Sharpen); // the seed's recipe: once, both splits
//! println!("{data}");
//! let cfg = LoaderConfig::train(250, Augment::Seed, 42);
//! for batch in BatchLoader::new(data.train.clone(), cfg, 0, 0)? {
//!     let batch = batch?; // images: (250, 3, 32, 32), fine: (250,)
//!     # let _ = batch;
//! }
//! # Ok(())
//! # }
//! ```

pub mod archive;
pub mod augment;
mod batch;
mod dataset;
pub mod download;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod preprocess;
pub mod synth;

pub use augment::Augment;
pub use batch::{
    batch_at, epoch_order, make_batch, normalize, Batch, BatchLoader, LastBatch, LoaderConfig,
    Order,
};
pub use dataset::{Dataset, Split};
pub use preprocess::Preprocess;

pub use download::{download, install_archive, Source};
pub use error::{Error, Result};
pub use format::{Format, Records};

//! The residual model, the optimizer and the training loop, the `trainer` binary's subcommands,
//! and the pieces around them. Top down, in reading order:
//!
//! - [`cli`]: the command line (clap only); [`config`]: a run's settings, their one
//!   validation, `config.toml`.
//! - [`commands`]: one module per subcommand, each a thin `run(&Args)`; `train`'s hands over to
//! - [`training`]: the [`Trainer`](training::Trainer) (`fit`, `epoch`, `step`), with
//!   [`training::checkpoints`] (where a run starts, `last` and `best`) and [`training::log`]
//!   (progress, the CSV logs, plots, the image grid).
//! - [`model`]: the seed's network from `nn-layers`' blocks, its one forward walk and backward;
//!   [`optim`]: clipping, Adam, SGD; [`schedule`]: learning rate and DropBlock keep probability.
//! - [`data`]: the dataset a run reads and its training batches; [`evaluate`]: loss and
//!   accuracy over a split; [`precise_bn`]: recomputing batch norm's running statistics, and
//!   when they can be trusted.
//! - [`state`]: what a checkpoint holds (model, optimizer, position, settings) on top of
//!   [`checkpoint`], the safetensors files.
//! - [`metrics`]: `metrics.csv` and `steps.csv`, with [`memory`] (what a run uses, and the
//!   error when the GPU runs out); [`plot`] and [`grid`]: PNG charts and image grids, their
//!   text in a built-in bitmap font ([`draw`]), so nothing depends on the fonts installed on
//!   the machine.

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod draw;
mod error;
pub mod evaluate;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod grid;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod precise_bn;
pub mod schedule;
pub mod state;
pub mod training;

pub use error::{Error, Result};

//! The residual model, the optimizer and the training loop, and the pieces around them that do
//! not need the model: plain data in, files out.
//!
//! - [`plot`]: line charts as PNG (loss and accuracy per epoch and per logged step).
//! - [`grid`]: a grid of test images titled with predicted and true class names, as PNG.
//! - [`checkpoint`]: safetensors checkpoints, written atomically, validated against the model.
//! - [`metrics`]: `metrics.csv` (one row per epoch) and `steps.csv` (one row per logged step).
//! - [`cli`]: the `trainer` command line; [`config`]: a run's settings, as `config.toml`.
//!
//! Text in pictures uses a built-in bitmap font ([`draw`]), so nothing depends on the fonts
//! installed on the machine.

pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod draw;
mod error;
pub mod evaluate;
pub mod grid;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod state;

pub use error::{Error, Result};

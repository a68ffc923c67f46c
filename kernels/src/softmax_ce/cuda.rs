//! Softmax cross-entropy on a CUDA device: the launch code of softmax_ce.cu, written once against
//! [`Backend`] for the GPU and the emulated device.

use crate::cuda::launch::{check_len, count, params, ELEMENTWISE_THREADS};
use crate::cuda::source::{module, Module};
use crate::cuda::{kernel, Backend, Kernel, LaunchConfig};
use crate::{Error, Result};

/// softmax_ce.cu, embedded, and the Rust twins of its parameter structs.
pub const MODULE: Module = module!(
    softmax_ce,
    headers: [],
    params: [SoftmaxCeForwardParams, SoftmaxCeBackwardParams, SoftmaxCeTallyParams],
);

params! {
    /// softmax_ce.cu `SoftmaxCeForwardParams`: logits: (rows, classes), labels: (rows) ->
    /// probs: (rows, classes), row_loss: (rows) f64.
    pub struct SoftmaxCeForwardParams {
        pub probs: u64,
        pub row_loss: u64,
        pub logits: u64,
        pub labels: u64,
        pub rows: u32,
        pub classes: u32,
    }

    /// softmax_ce.cu `SoftmaxCeBackwardParams`: probs, labels -> dlogits: (rows, classes).
    pub struct SoftmaxCeBackwardParams {
        pub dlogits: u64,
        pub probs: u64,
        pub labels: u64,
        pub rows: u32,
        pub classes: u32,
    }

    /// softmax_ce.cu `SoftmaxCeTallyParams`: row_loss: (rows) f64, probs: (rows, classes),
    /// labels: (rows) -> sums: (4) f64, accumulated.
    pub struct SoftmaxCeTallyParams {
        pub sums: u64,
        pub row_loss: u64,
        pub probs: u64,
        pub labels: u64,
        pub rows: u32,
        pub classes: u32,
    }
}

pub const SOFTMAX_CE_FORWARD: Kernel<SoftmaxCeForwardParams> = kernel!(MODULE, softmax_ce_forward);
pub const SOFTMAX_CE_BACKWARD: Kernel<SoftmaxCeBackwardParams> =
    kernel!(MODULE, softmax_ce_backward);
pub const SOFTMAX_CE_TALLY: Kernel<SoftmaxCeTallyParams> = kernel!(MODULE, softmax_ce_tally);

/// The rows of a batch: one per label, an error naming `op` unless there are rows and classes.
fn rows<B: Backend>(
    dev: &B,
    op: &'static str,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<usize> {
    let rows = dev.len(labels);
    if rows == 0 || classes == 0 {
        return Err(Error::Shape {
            op,
            msg: format!("{rows} rows of {classes} classes: both must be > 0"),
        });
    }
    Ok(rows)
}

/// Softmax and per-row cross-entropy. logits: (rows, classes), labels: (rows) ->
/// probs: (rows, classes), row_loss: (rows) in f64, overwritten; [`mean_loss`] reads the loss.
pub fn softmax_ce_forward<B: Backend>(
    dev: &B,
    probs: &mut B::Buf<f32>,
    row_loss: &mut B::Buf<f64>,
    logits: &B::Buf<f32>,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<()> {
    const OP: &str = "cuda softmax_ce_forward";
    let rows = rows(dev, OP, labels, classes)?;
    check_len(dev, OP, "logits", logits, rows * classes)?;
    check_len(dev, OP, "probs", probs, rows * classes)?;
    check_len(dev, OP, "row_loss", row_loss, rows)?;
    let p = SoftmaxCeForwardParams {
        probs: dev.addr_mut(probs),
        row_loss: dev.addr_mut(row_loss),
        logits: dev.addr(logits),
        labels: dev.addr(labels),
        rows: count(OP, rows)?,
        classes: count(OP, rows * classes).map(|_| classes as u32)?,
    };
    // SAFETY: logits and probs hold rows * classes values, labels and row_loss rows; the
    // kernel reads logits only at labels below classes.
    unsafe { dev.launch(SOFTMAX_CE_FORWARD, LaunchConfig::elementwise(rows), &p) }
}

/// The mean of the per-row losses, summed in f64 in row order as the CPU does (a host read).
pub fn mean_loss<B: Backend>(dev: &B, row_loss: &B::Buf<f64>) -> Result<f32> {
    let losses = dev.download(row_loss)?;
    if let Some(r) = losses.iter().position(|&l| l < 0.0) {
        return Err(Error::Invalid {
            op: "cuda softmax_ce_forward",
            msg: format!("label of row {r} is not below the number of classes"),
        });
    }
    Ok((losses.iter().sum::<f64>() / losses.len() as f64) as f32)
}

/// dlogits = (probs - onehot(labels)) / rows. probs: (rows, classes), labels: (rows) ->
/// dlogits: (rows, classes), overwritten.
pub fn softmax_ce_backward<B: Backend>(
    dev: &B,
    dlogits: &mut B::Buf<f32>,
    probs: &B::Buf<f32>,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<()> {
    const OP: &str = "cuda softmax_ce_backward";
    let rows = dev.len(labels);
    check_len(dev, OP, "probs", probs, rows * classes)?;
    check_len(dev, OP, "dlogits", dlogits, rows * classes)?;
    let p = SoftmaxCeBackwardParams {
        dlogits: dev.addr_mut(dlogits),
        probs: dev.addr(probs),
        labels: dev.addr(labels),
        rows: count(OP, rows)?,
        classes: count(OP, rows * classes).map(|_| classes as u32)?,
    };
    // SAFETY: probs and dlogits hold rows * classes values, labels rows.
    unsafe {
        dev.launch(
            SOFTMAX_CE_BACKWARD,
            LaunchConfig::elementwise(rows * classes),
            &p,
        )
    }
}

/// Adds a minibatch to a loss tally ([`crate::softmax_ce::LossTally`]) without a host read:
/// its mean loss (the row losses of [`softmax_ce_forward`] summed in row order, rounded to f32)
/// and its rows whose largest probability is at the label. row_loss: (rows) f64,
/// probs: (rows, classes), labels: (rows) -> sums: (4) f64, accumulated.
pub fn softmax_ce_tally<B: Backend>(
    dev: &B,
    sums: &mut B::Buf<f64>,
    row_loss: &B::Buf<f64>,
    probs: &B::Buf<f32>,
    labels: &B::Buf<u32>,
    classes: usize,
) -> Result<()> {
    const OP: &str = "cuda softmax_ce_tally";
    let rows = rows(dev, OP, labels, classes)?;
    check_len(dev, OP, "sums", sums, crate::softmax_ce::TALLY_LEN)?;
    check_len(dev, OP, "row_loss", row_loss, rows)?;
    check_len(dev, OP, "probs", probs, rows * classes)?;
    let p = SoftmaxCeTallyParams {
        sums: dev.addr_mut(sums),
        row_loss: dev.addr(row_loss),
        probs: dev.addr(probs),
        labels: dev.addr(labels),
        rows: count(OP, rows)?,
        classes: count(OP, rows * classes).map(|_| classes as u32)?,
    };
    // SAFETY: sums holds TALLY_LEN values, row_loss and labels rows, probs rows * classes; one
    // block, whose thread 0 alone writes sums.
    unsafe {
        dev.launch(
            SOFTMAX_CE_TALLY,
            LaunchConfig::linear(1, ELEMENTWISE_THREADS, 0),
            &p,
        )
    }
}

//! Softmax cross-entropy on logits, averaged over the batch, and its gradient.
//!
//! For row n with logits z and label t: p = softmax(z), loss_n = log(sum_j exp z_j) - z_t,
//! computed as log(sum_j exp(z_j - max z)) - (z_t - max z) so that no exponent overflows.
//! The loss is mean_n loss_n, and d loss / d z_nj = (p_nj - [j == t_n]) / N.
//!
//! # Shapes
//! logits, probs, dlogits: (N, classes); labels: N values in 0..classes.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
mod tally;
#[cfg(test)]
mod tests;

pub use cpu::cross_entropy;
pub use tally::{count_correct, softmax_ce_forward_tallied, LossTally, TallyReport, TALLY_LEN};

use tensor_core::Tensor;

use crate::cuda::{dispatch, Backend, TensorBackend};
use crate::{Error, Result};

/// Checks logits (N, classes) against N labels; returns (N, classes).
fn check(op: &'static str, logits: &Tensor, labels: &[u32]) -> Result<(usize, usize)> {
    let (n, classes) = match logits.dims() {
        &[n, classes] if n > 0 && classes > 0 => (n, classes),
        _ => {
            return Err(Error::Shape {
                op,
                msg: format!(
                    "logits have shape {}, expected (N, classes) with N, classes > 0",
                    logits.shape()
                ),
            })
        }
    };
    if labels.len() != n {
        return Err(Error::Shape {
            op,
            msg: format!(
                "{} labels for logits of shape {}",
                labels.len(),
                logits.shape()
            ),
        });
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(Error::Invalid {
            op,
            msg: format!("label {l} at index {i} is out of range for {classes} classes"),
        });
    }
    Ok((n, classes))
}

/// Forward: writes the softmax probabilities and returns the mean cross-entropy loss.
///
/// logits: (N, classes), labels: N -> probs: (N, classes), overwritten; returns the loss.
/// The per-row losses are summed in f64, in row order.
///
/// # Errors
/// [`Error::Shape`] if `logits` is not (N, classes) with N, classes > 0, if `labels` does not
/// hold N values, or if `probs` differs in shape from `logits`; [`Error::Invalid`] naming the
/// index and value of the first label >= classes.
pub fn softmax_ce_forward(probs: &mut Tensor, logits: &Tensor, labels: &[u32]) -> Result<f32> {
    const OP: &str = "softmax_ce_forward";
    let (n, classes) = check(OP, logits, labels)?;
    probs.expect_shape(OP, "probs", logits.dims())?;
    dispatch!(OP, [("probs", probs), ("logits", logits)],
        cpu => {
            let sum = cpu::forward(probs.as_mut_slice()?, logits.as_slice()?, labels, classes);
            Ok((sum / n as f64) as f32)
        },
        // The labels go up and the mean loss comes back: one small copy each way per call.
        cuda |b| => {
            let (labels, mut row_loss) = (b.upload(labels)?, b.alloc::<f64>(n)?);
            let (probs, logits) = (b.buf_mut(OP, probs)?, b.buf(OP, logits)?);
            cuda::softmax_ce_forward(b, probs, &mut row_loss, logits, &labels, classes)?;
            cuda::mean_loss(b, &row_loss)
        },
    )
}

/// Backward: dlogits = (probs - onehot(labels)) / N, the gradient of the mean loss.
///
/// probs: (N, classes), labels: N -> dlogits: (N, classes), overwritten.
///
/// # Errors
/// As [`softmax_ce_forward`], with `probs` in the place of `logits`.
pub fn softmax_ce_backward(dlogits: &mut Tensor, probs: &Tensor, labels: &[u32]) -> Result<()> {
    const OP: &str = "softmax_ce_backward";
    let (_, classes) = check(OP, probs, labels)?;
    dlogits.expect_shape(OP, "dlogits", probs.dims())?;
    dispatch!(OP, [("dlogits", dlogits), ("probs", probs)],
        cpu => {
            cpu::backward(dlogits.as_mut_slice()?, probs.as_slice()?, labels, classes);
            Ok(())
        },
        cuda |b| => {
            let labels = b.upload(labels)?;
            let (dlogits, probs) = (b.buf_mut(OP, dlogits)?, b.buf(OP, probs)?);
            cuda::softmax_ce_backward(b, dlogits, probs, &labels, classes)
        },
    )
}

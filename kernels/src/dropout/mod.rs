//! Inverted dropout: each value is kept with probability `keep` and scaled by `1 / keep`, so the
//! expected output equals the input; identity when `keep` is 1.
//!
//! The mask is never stored: element `i` is kept iff `key.uniform(i) < keep`, a pure function of
//! the [`MaskKey`] (seed, step, layer) and the element index, so `backward` recomputes exactly the
//! mask `forward` drew, on any thread count and, later, on any device.
//!
//! # Shapes
//! x: any shape -> y: same shape; dy: any shape -> dx: same shape.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
#[cfg(test)]
mod tests;

use tensor_core::Tensor;

use crate::cuda::{dispatch, TensorBackend};

use crate::philox::MaskKey;
use crate::{Error, Result};

/// Checks a keep probability: it must lie in (0, 1] (NaN is refused).
pub(crate) fn check_keep_prob(op: &'static str, keep: f32) -> Result<()> {
    if keep > 0.0 && keep <= 1.0 {
        Ok(())
    } else {
        Err(Error::Invalid {
            op,
            msg: format!("keep probability {keep} is outside (0, 1]"),
        })
    }
}

/// Dropout forward: `y = x * [u < keep] / keep` with u = `key.uniform(i)` for flat element i.
///
/// x: any shape -> y: same shape, overwritten.
///
/// # Errors
/// [`Error::Invalid`] if `keep` is not in (0, 1]; a shape error if `y` and `x` differ in shape.
pub fn dropout_forward(y: &mut Tensor, x: &Tensor, keep: f32, key: MaskKey) -> Result<()> {
    apply_mask("dropout_forward", ["y", "x"], y, x, keep, key)
}

/// Dropout backward: `dx = dy * [u < keep] / keep`, with the forward's `key` and `keep`.
///
/// dy: any shape -> dx: same shape, overwritten.
///
/// # Errors
/// [`Error::Invalid`] if `keep` is not in (0, 1]; a shape error if `dx` and `dy` differ in shape.
pub fn dropout_backward(dx: &mut Tensor, dy: &Tensor, keep: f32, key: MaskKey) -> Result<()> {
    apply_mask("dropout_backward", ["dx", "dy"], dx, dy, keep, key)
}

/// out = inp * mask / keep on the tensors' device: the forward (inp = x) and the backward
/// (inp = dy) alike, `names` naming (out, inp) in errors. inp: any shape -> out: the same,
/// overwritten.
fn apply_mask(
    op: &'static str,
    [out_name, inp_name]: [&'static str; 2],
    out: &mut Tensor,
    inp: &Tensor,
    keep: f32,
    key: MaskKey,
) -> Result<()> {
    check_keep_prob(op, keep)?;
    out.expect_shape(op, out_name, inp.dims())?;
    dispatch!(op, [(out_name, out), (inp_name, inp)],
        cpu => {
            cpu::apply_mask(out.as_mut_slice()?, inp.as_slice()?, keep, key);
            Ok(())
        },
        cuda |b| => cuda::dropout_apply(b, b.buf_mut(op, out)?, b.buf(op, inp)?, keep, key),
    )
}

//! The global gradient norm and clipping by it, as TensorFlow's `tf.clip_by_global_norm`.
//!
//! Over all gradient tensors g_1 .. g_P of a model:
//!   global_norm = sqrt(sum_i sum_of_squares(g_i))
//!   scale       = max_norm / max(global_norm, max_norm)
//!   g_i        *= scale        (for every i; nothing changes when global_norm <= max_norm)
//!
//! A caller holding the gradients one at a time (a `Parameters` visitor, say) does it in two
//! passes, in the same fixed parameter order each step so the f64 sum is reproducible:
//! ```
//! # use kernels::grad_norm::*;
//! # use tensor_core::Tensor;
//! # let mut grads = vec![Tensor::full([3], 30.0), Tensor::full([2, 2], 40.0)];
//! let sums: Vec<f64> = grads.iter().map(sum_of_squares).collect::<Result<_, _>>()?;
//! let norm = global_norm(&sums);
//! let scale = clip_factor(norm, 100.0)?;
//! if scale < 1.0 {
//!     for g in &mut grads {
//!         scale_in_place(g, scale)?;
//!     }
//! }
//! # assert!((norm - (3.0f64 * 900.0 + 4.0 * 1600.0).sqrt()).abs() < 1e-9);
//! # Ok::<(), kernels::Error>(())
//! ```
//! [`clip_by_global_norm`] does the same for gradients gathered in a slice.
//!
//! # Shapes
//! Every tensor: any shape.

mod cpu;
#[cfg(test)]
mod tests;

use tensor_core::{Device, Tensor};

use crate::cuda::tensor::on_cuda;
use crate::cuda::{ops, TensorBackend};

use crate::{Error, Result};

/// sum(x^2), accumulated in f64 over fixed chunks, each summed serially and the chunk sums added
/// in order: the same bits for any thread count.
///
/// # Errors
/// A device error if `x` is not readable on the CPU.
pub fn sum_of_squares(x: &Tensor) -> Result<f64> {
    match x.device() {
        Device::Cpu => Ok(cpu::sum_of_squares(x.as_slice()?)),
        d => on_cuda!("sum_of_squares", d, |b| ops::sum_of_squares(
            b,
            b.buf("sum_of_squares", x)?
        )),
    }
}

/// sqrt of the sum of per-tensor sums of squares, added in the order given.
pub fn global_norm(sums_of_squares: &[f64]) -> f64 {
    sums_of_squares.iter().sum::<f64>().sqrt()
}

/// The factor that clips to `max_norm`: max_norm / max(global_norm, max_norm), exactly 1 when
/// the norm is within the bound.
///
/// # Errors
/// [`Error::Invalid`] if `max_norm` is not finite and > 0, or `global_norm` is NaN or infinite
/// (a diverged step: scaling would turn every gradient into NaN).
pub fn clip_factor(global_norm: f64, max_norm: f32) -> Result<f32> {
    const OP: &str = "clip_by_global_norm";
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(Error::Invalid {
            op: OP,
            msg: format!("max norm {max_norm} is not finite and > 0"),
        });
    }
    if !global_norm.is_finite() {
        return Err(Error::Invalid {
            op: OP,
            msg: format!("the global gradient norm is {global_norm}"),
        });
    }
    if global_norm <= max_norm as f64 {
        Ok(1.0)
    } else {
        Ok((max_norm as f64 / global_norm) as f32)
    }
}

/// x *= s, in place.
///
/// # Errors
/// A device error if `x` is not writable on the CPU.
pub fn scale_in_place(x: &mut Tensor, s: f32) -> Result<()> {
    match x.device() {
        Device::Cpu => cpu::scale(x.as_mut_slice()?, s),
        d => on_cuda!("scale_in_place", d, |b| ops::scale_in_place(
            b,
            b.buf_mut("scale_in_place", x)?,
            s
        ))?,
    }
    Ok(())
}

/// Clips `grads` in place by their global norm and returns that norm (before clipping).
///
/// # Errors
/// As [`clip_factor`]; nothing is scaled when it fails.
pub fn clip_by_global_norm(grads: &mut [&mut Tensor], max_norm: f32) -> Result<f64> {
    let sums = grads
        .iter()
        .map(|g| sum_of_squares(g))
        .collect::<Result<Vec<f64>>>()?;
    let norm = global_norm(&sums);
    let scale = clip_factor(norm, max_norm)?;
    if scale < 1.0 {
        for g in grads.iter_mut() {
            scale_in_place(g, scale)?;
        }
    }
    Ok(norm)
}

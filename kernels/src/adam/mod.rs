//! The Adam update in TensorFlow 1's form (`tf.train.AdamOptimizer`), in place, one tensor at a
//! time.
//!
//! At step t = 1, 2, ... with gradient g:
//!   lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//!   m    = beta1 * m + (1 - beta1) * g
//!   v    = beta2 * v + (1 - beta2) * g^2
//!   w   -= lr_t * m / (sqrt(v) + epsilon)
//! The bias corrections are folded into lr_t, so epsilon is added to the uncorrected sqrt(v)
//! (PyTorch adds it to the corrected one; the two differ only when sqrt(v) is near epsilon).
//! lr_t is computed in f64 and rounded to f32; the per-value update runs in f32. TensorFlow keeps
//! beta^t as an f32 running product and computes lr_t in f32, which can differ in the last bits.
//!
//! # Shapes
//! w, m, v, g: any shape, all the same.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
#[cfg(test)]
mod tests;

use tensor_core::{Device, Tensor};

use crate::cuda::{dispatch, TensorBackend};

use crate::{Error, Result};

/// Adam's hyper-parameters. [`Adam::default`] holds the seed's: lr 5e-4, beta1 0.9,
/// beta2 0.999, epsilon 1e-8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }
}

impl Adam {
    /// The step size of step `t` (from 1): lr * sqrt(1 - beta2^t) / (1 - beta1^t).
    ///
    /// # Errors
    /// [`Error::Invalid`] if `t` is 0 or a hyper-parameter is out of range (see [`adam_update`]).
    pub fn lr_t(&self, t: u64) -> Result<f32> {
        self.check(t)?;
        let exp = t.min(i32::MAX as u64) as i32;
        let (b1, b2) = (self.beta1 as f64, self.beta2 as f64);
        Ok((self.lr as f64 * (1.0 - b2.powi(exp)).sqrt() / (1.0 - b1.powi(exp))) as f32)
    }

    fn check(&self, t: u64) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid { op: "adam", msg });
        if t == 0 {
            return bad("step t is 0; steps count from 1".into());
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("learning rate {} is not finite and >= 0", self.lr));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} {b} is outside [0, 1)"));
            }
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return bad(format!("epsilon {} is not finite and > 0", self.epsilon));
        }
        Ok(())
    }
}

/// One Adam step `t` (counting from 1) on weight `w` with gradient `g`, updating the first and
/// second moments `m` and `v` (zeros before step 1) and `w` in place.
///
/// w, m, v, g: the same shape.
///
/// # Errors
/// [`Error::Invalid`] if `t` is 0, `lr` is negative or not finite, a beta is outside [0, 1) or
/// `epsilon` is not finite and > 0; a shape error naming the tensor that differs from `w`.
pub fn adam_update(
    w: &mut Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    g: &Tensor,
    cfg: &Adam,
    t: u64,
) -> Result<()> {
    const OP: &str = "adam_update";
    let lr_t = cfg.lr_t(t)?;
    m.expect_shape(OP, "m", w.dims())?;
    v.expect_shape(OP, "v", w.dims())?;
    g.expect_shape(OP, "g", w.dims())?;
    dispatch!(OP, [("w", w), ("m", m), ("v", v), ("g", g)],
        cpu => {
            let (w, m, v) = (w.as_mut_slice()?, m.as_mut_slice()?, v.as_mut_slice()?);
            cpu::update(w, m, v, g.as_slice()?, cfg, lr_t);
            Ok(())
        },
        cuda |b| => {
            let (w, m, v) = (b.buf_mut(OP, w)?, b.buf_mut(OP, m)?, b.buf_mut(OP, v)?);
            cuda::adam_update(b, w, m, v, b.buf(OP, g)?, cfg, t)
        },
    )
}

/// Clipping, Adam and the zeroing of the gradient, fused: the gradient is multiplied by
/// `grad_scale` (the clip factor of [`crate::grad_norm::clip_factor`]; 1 leaves it as it is),
/// step `t` of [`adam_update`] is taken with it, and `g` is set to 0 for the next step.
///
/// On the CPU this is one pass over the four tensors instead of three (scale, update, zero),
/// with bit-identical results; on a GPU it runs those three kernels in turn.
///
/// w, m, v, g: the same shape; g is left all zeros.
///
/// # Errors
/// As [`adam_update`]; [`Error::Invalid`] if `grad_scale` is not finite and > 0. Nothing is
/// changed when it fails.
pub fn adam_update_scaled_and_zero(
    w: &mut Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    g: &mut Tensor,
    cfg: &Adam,
    t: u64,
    grad_scale: f32,
) -> Result<()> {
    const OP: &str = "adam_update_scaled_and_zero";
    let lr_t = cfg.lr_t(t)?;
    if !(grad_scale.is_finite() && grad_scale > 0.0) {
        return Err(Error::Invalid {
            op: OP,
            msg: format!("gradient scale {grad_scale} is not finite and > 0"),
        });
    }
    m.expect_shape(OP, "m", w.dims())?;
    v.expect_shape(OP, "v", w.dims())?;
    g.expect_shape(OP, "g", w.dims())?;
    match Tensor::common_device(OP, &[("w", w), ("m", m), ("v", v), ("g", g)])? {
        Device::Cpu => cpu::update_scaled_and_zero(
            w.as_mut_slice()?,
            m.as_mut_slice()?,
            v.as_mut_slice()?,
            g.as_mut_slice()?,
            cfg,
            lr_t,
            grad_scale,
        ),
        _ => {
            if grad_scale != 1.0 {
                crate::grad_norm::scale_in_place(g, grad_scale)?;
            }
            adam_update(w, m, v, g, cfg, t)?;
            g.fill(0.0)?;
        }
    }
    Ok(())
}

//! Stochastic gradient descent with momentum, optional Nesterov momentum and L2 weight decay,
//! in PyTorch's form (`torch.optim.SGD` with dampening 0), in place, one tensor at a time.
//!
//! With gradient g:
//!   d   = g + weight_decay * w
//!   buf = momentum * buf + d
//!   d   = d + momentum * buf   (Nesterov)   or   d = buf   (classical)
//!   w  -= lr * d
//! PyTorch sets buf = d on the first step; starting from buf = 0 gives the same value, so no
//! special first step is needed. With momentum 0 this is plain SGD (buf = d).
//! On a CUDA device the same formulas run in `sgd.cu`, one thread per value.
//!
//! # Shapes
//! w, buf, g: any shape, all the same.

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
#[cfg(test)]
mod tests;

use tensor_core::Tensor;

use crate::cuda::{dispatch, TensorBackend};
use crate::{Error, Result};

/// SGD's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl Sgd {
    fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid { op: "sgd", msg });
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad(format!("learning rate {} is not finite and >= 0", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum {} is outside [0, 1)", self.momentum));
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("Nesterov momentum needs momentum > 0".into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight decay {} is not finite and >= 0",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

/// One SGD step on weight `w` with gradient `g`, updating the momentum buffer `buf` (zeros before
/// the first step) and `w` in place.
///
/// w, buf, g: the same shape.
///
/// # Errors
/// [`Error::Invalid`] if `lr` or `weight_decay` is negative or not finite, `momentum` is outside
/// [0, 1), or Nesterov is asked with momentum 0; a shape error naming the tensor that differs
/// from `w`.
pub fn sgd_update(w: &mut Tensor, buf: &mut Tensor, g: &Tensor, cfg: &Sgd) -> Result<()> {
    const OP: &str = "sgd_update";
    cfg.check()?;
    buf.expect_shape(OP, "buf", w.dims())?;
    g.expect_shape(OP, "g", w.dims())?;
    dispatch!(OP, [("w", w), ("buf", buf), ("g", g)],
        cpu => {
            cpu::update(w.as_mut_slice()?, buf.as_mut_slice()?, g.as_slice()?, cfg);
            Ok(())
        },
        cuda |b| => {
            let (w, buf) = (b.buf_mut(OP, w)?, b.buf_mut(OP, buf)?);
            cuda::sgd_update(b, w, buf, b.buf(OP, g)?, cfg)
        },
    )
}

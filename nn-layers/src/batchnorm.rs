//! Batch normalisation layers: [`BatchNorm2d`] over the channels of (N, C, H, W) maps and
//! [`BatchNorm1d`] over the features of (N, F) rows, one generic type underneath.

use kernels::batchnorm::{
    batchnorm_apply, batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train,
    batchnorm_relu_apply, batchnorm_relu_backward, batchnorm_relu_forward_eval,
    batchnorm_relu_forward_train, BatchNormConfig, BatchNormStats,
};
use kernels::relu::ReluMask;
use tensor_core::{Device, Tensor};

use crate::profile::{self, LayerKind, Pass};
use crate::{join, Error, Mode, Param, Parameters, ReLU, ReluCache, Result};

/// Batch norm over the channels of (N, C, H, W) maps (statistics over N, H, W).
pub type BatchNorm2d = BatchNorm<4>;
/// Batch norm over the features of (N, F) rows (statistics over N).
pub type BatchNorm1d = BatchNorm<2>;

/// Batch normalisation of an input of rank `RANK` (4: (N, C, H, W), 2: (N, F)), channel axis 1:
/// each channel normalised over its M = N*H*W values (M = N for (N, F)), then scaled by `weight`
/// and shifted by `bias`. `Mode::Train` normalises with the batch's mean and variance and updates
/// the running ones (the variance as `config.running_variance` says); `Mode::Eval` normalises with
/// the running statistics; `Mode::RecomputeStats` normalises as in training and averages the
/// batches' statistics with equal weights (precise batch norm, see [`Mode`]). The arithmetic is
/// in [`kernels::batchnorm`].
///
/// The formulas, forward (with the running averages) and backward: `docs/walkthrough.md`,
/// "Batch norm" and "Batch norm (training)". `dweight` and `dbias` are accumulated; `dx` is a
/// fresh tensor.
///
/// Parameters `weight` (init 1) and `bias` (init 0); buffers `running_mean` (init 0) and
/// `running_var` (init 1); all (C,), named as in PyTorch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm<const RANK: usize> {
    /// weight: (C,), the scale.
    pub weight: Param,
    /// bias: (C,), the shift.
    pub bias: Param,
    /// running_mean: (C,)
    pub running_mean: Tensor,
    /// running_var: (C,)
    pub running_var: Tensor,
    pub config: BatchNormConfig,
}

/// What [`BatchNorm::backward`] needs from its forward.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormCache {
    /// x: (N, C, H, W) or (N, F), the forward's input.
    x: Tensor,
    /// mean, inv_std: (C,), and whether they were the batch's or the running ones.
    stats: BatchNormStats,
}

impl<const RANK: usize> BatchNorm<RANK> {
    /// The layer's name in errors.
    const NAME: &'static str = if RANK == 4 {
        "BatchNorm2d"
    } else {
        "BatchNorm1d"
    };

    /// A layer for `channels` channels (features) with the seed's eps 1e-5 and momentum 0.997.
    ///
    /// # Errors
    /// [`Error::Config`] if `channels` is 0.
    pub fn new(channels: usize) -> Result<Self> {
        Self::with_config(channels, BatchNormConfig::default())
    }

    /// A layer for `channels` channels (features) with the given eps and momentum.
    ///
    /// # Errors
    /// [`Error::Config`] if `channels` is 0 or `RANK` is neither 2 nor 4; a kernel error if
    /// `config` is out of range.
    pub fn with_config(channels: usize, config: BatchNormConfig) -> Result<Self> {
        let config_err = |msg: String| Error::Config {
            layer: Self::NAME,
            msg,
        };
        if RANK != 2 && RANK != 4 {
            return Err(config_err(format!(
                "inputs of rank {RANK}: only 2 (N, F) and 4 (N, C, H, W) are supported"
            )));
        }
        if channels == 0 {
            return Err(config_err("0 channels".into()));
        }
        config.check(Self::NAME)?;
        Ok(BatchNorm {
            weight: Param::new(Tensor::full([channels], 1.0)),
            bias: Param::new(Tensor::zeros([channels])),
            running_mean: Tensor::zeros([channels]),
            running_var: Tensor::full([channels], 1.0),
            config,
        })
    }

    /// Number of channels (features), C.
    pub fn channels(&self) -> usize {
        self.weight.value.len()
    }

    /// Checks that x is (N, C, H, W) (or (N, F)) with this layer's C.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = self.channels();
        if x.shape().rank() == RANK && x.dims()[1] == c {
            return Ok(());
        }
        let expected = if RANK == 4 {
            format!("(N, {c}, H, W)")
        } else {
            format!("(N, {c})")
        };
        Err(tensor_core::Error::ShapeMismatch {
            op: Self::NAME,
            what: "x",
            got: x.shape().clone(),
            expected,
        }
        .into())
    }

    /// x: (N, C, H, W) (or (N, F)) -> y: the same shape.
    ///
    /// # Errors
    /// x of the wrong rank or channel count; with batch statistics, fewer than 2 values per
    /// channel.
    pub fn forward(&mut self, x: Tensor, mode: Mode) -> Result<(Tensor, BatchNormCache)> {
        let (y, cache, _) = self.forward_then(x, mode, false)?;
        Ok((y, cache))
    }

    /// This layer and the ReLU after it: the same output, cache and running statistics, to the
    /// bit, as [`BatchNorm::forward`] then [`ReLU::forward`](crate::ReLU::forward), in one pass
    /// over the output on the CPU instead of two (`kernels::batchnorm::
    /// batchnorm_relu_forward_train`). Profiled as batch norm.
    ///
    /// # Errors
    /// As [`BatchNorm::forward`].
    pub fn forward_relu(
        &mut self,
        x: Tensor,
        mode: Mode,
    ) -> Result<(Tensor, BatchNormCache, ReluCache)> {
        let (y, cache, mask) = self.forward_then(x, mode, true)?;
        let mask = mask.expect("a mask was asked for");
        Ok((y, cache, ReluCache::from_mask(mask)))
    }

    /// Both forwards; with `relu`, y = relu(...) and its mask.
    fn forward_then(
        &mut self,
        x: Tensor,
        mode: Mode,
        relu: bool,
    ) -> Result<(Tensor, BatchNormCache, Option<ReluMask>)> {
        let _timer = profile::timed(LayerKind::BatchNorm, Pass::Forward);
        self.check_input(&x)?;
        let mut y = x.new_zeros(x.shape().clone())?;
        let (stats, mask) = match mode {
            Mode::Train => self.forward_batch(&mut y, &x, self.config, relu)?,
            Mode::RecomputeStats { averaged } => {
                // running = keep * running + (1 - keep) * batch with keep = averaged / (averaged + 1).
                let keep = (averaged as f64 / (averaged as f64 + 1.0)) as f32;
                let equal_weights = BatchNormConfig {
                    momentum: keep,
                    ..self.config
                };
                self.forward_batch(&mut y, &x, equal_weights, relu)?
            }
            Mode::Eval => {
                let (w, b) = (&self.weight.value, &self.bias.value);
                let (rm, rv, eps) = (&self.running_mean, &self.running_var, self.config.eps);
                if relu {
                    let (stats, mask) = batchnorm_relu_forward_eval(&mut y, &x, w, b, rm, rv, eps)?;
                    (stats, Some(mask))
                } else {
                    (batchnorm_forward_eval(&mut y, &x, w, b, rm, rv, eps)?, None)
                }
            }
        };
        Ok((y, BatchNormCache { x, stats }, mask))
    }

    /// y from the batch's statistics, which move the running ones as `config` says; with
    /// `relu`, y = relu(...) and its mask.
    fn forward_batch(
        &mut self,
        y: &mut Tensor,
        x: &Tensor,
        config: BatchNormConfig,
        relu: bool,
    ) -> Result<(BatchNormStats, Option<ReluMask>)> {
        let (w, b) = (&self.weight.value, &self.bias.value);
        let (rm, rv) = (&mut self.running_mean, &mut self.running_var);
        Ok(if relu {
            let (stats, mask) = batchnorm_relu_forward_train(y, x, w, b, rm, rv, &config)?;
            (stats, Some(mask))
        } else {
            (batchnorm_forward_train(y, x, w, b, rm, rv, &config)?, None)
        })
    }

    /// The forward's output again, bit for bit, from its cache: y = weight (x - mean) inv_std +
    /// bias with the statistics that forward used (see [`ConvBlock`](crate::ConvBlock), which
    /// recomputes instead of keeping it). CPU tensors only.
    ///
    /// # Errors
    /// The cache is not on the CPU.
    pub fn recompute_output(&self, cache: &BatchNormCache) -> Result<Tensor> {
        self.recompute(cache, false)
    }

    /// relu of [`BatchNorm::recompute_output`], in the same pass: what [`BatchNorm::forward_relu`]
    /// returned, bit for bit. CPU tensors only.
    ///
    /// # Errors
    /// The cache is not on the CPU.
    pub fn recompute_relu_output(&self, cache: &BatchNormCache) -> Result<Tensor> {
        self.recompute(cache, true)
    }

    fn recompute(&self, cache: &BatchNormCache, relu: bool) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::BatchNorm, Pass::Backward);
        let mut y = cache.x.new_zeros(cache.x.shape().clone())?;
        let (w, b) = (&self.weight.value, &self.bias.value);
        if relu {
            batchnorm_relu_apply(&mut y, &cache.x, w, b, &cache.stats)?;
        } else {
            batchnorm_apply(&mut y, &cache.x, w, b, &cache.stats)?;
        }
        Ok(y)
    }

    /// dy: (N, C, H, W) (or (N, F)) -> dx: the same shape, fresh; weight and bias gradients
    /// accumulated.
    ///
    /// # Errors
    /// dy's shape differs from the forward's input.
    pub fn backward(&mut self, dy: &Tensor, cache: BatchNormCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::BatchNorm, Pass::Backward);
        let mut dx = dy.new_zeros(cache.x.shape().clone())?;
        batchnorm_backward(
            &mut dx,
            &mut self.weight.grad,
            &mut self.bias.grad,
            dy,
            &cache.x,
            &self.weight.value,
            &cache.stats,
        )?;
        Ok(dx)
    }

    /// The backward of [`BatchNorm::forward_relu`]: dy is the gradient of the ReLU's output,
    /// `relu` the cache that forward returned. The same dx and gradients, to the bit, as
    /// [`ReLU::backward_owned`](crate::ReLU::backward_owned) then [`BatchNorm::backward`]; on the
    /// CPU in the batch norm's passes alone (`kernels::batchnorm::batchnorm_relu_backward`),
    /// elsewhere the two in turn, the ReLU's in dy's buffer. Profiled as batch norm.
    ///
    /// # Errors
    /// As [`BatchNorm::backward`].
    pub fn backward_relu(
        &mut self,
        dy: Tensor,
        relu: ReluCache,
        cache: BatchNormCache,
    ) -> Result<Tensor> {
        if dy.device() != Device::Cpu {
            let dy = ReLU.backward_owned(dy, relu)?;
            return self.backward(&dy, cache);
        }
        let _timer = profile::timed(LayerKind::BatchNorm, Pass::Backward);
        let mut dx = dy.new_zeros(cache.x.shape().clone())?;
        batchnorm_relu_backward(
            &mut dx,
            &mut self.weight.grad,
            &mut self.bias.grad,
            &dy,
            relu.mask(),
            &cache.x,
            &self.weight.value,
            &cache.stats,
        )?;
        Ok(dx)
    }
}

impl<const RANK: usize> Parameters for BatchNorm<RANK> {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&join(prefix, "weight"), &mut self.weight);
        f(&join(prefix, "bias"), &mut self.bias);
    }

    fn visit_buffers(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor)) {
        f(&join(prefix, "running_mean"), &mut self.running_mean);
        f(&join(prefix, "running_var"), &mut self.running_var);
    }
}

#[cfg(test)]
mod tests;

//! The fully-connected layer (no bias), on the GEMM of [`kernels::gemm`].

use kernels::gemm::{matmul_in, Trans};
use kernels::precision::Precision;
use rand::Rng;
use tensor_core::Tensor;

use crate::profile::{self, LayerKind, Pass};
use crate::{join, Error, Mode, Param, Parameters, Result};

/// Fully-connected layer without bias: x: (N, F) -> y: (N, O), weight: (O, F) as PyTorch
/// stores it; three products through [`kernels::gemm::matmul_in`], in [`Linear::precision`]
/// (on a CUDA device, TF32 or BF16 operands run the tensor-core GEMMs; the weight, its gradient
/// and every output stay FP32).
///
/// The formulas, forward and backward: `docs/walkthrough.md`, "Linear", in its
/// sections 2 and 3. `dweight` is
/// accumulated; `dx` is a fresh tensor.
///
/// Initialisation: Xavier uniform with fan_in = F and fan_out = O.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// weight: (O, F)
    pub weight: Param,
    /// The number format of the products' operands ([`Precision`]; FP32 by default).
    pub precision: Precision,
}

/// What [`Linear::backward`] needs from its forward.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearCache {
    /// x: (N, F), the forward's input.
    x: Tensor,
}

impl Linear {
    /// A layer from `in_features` (F) to `out_features` (O), Xavier-uniform initialised from
    /// `rng`.
    ///
    /// # Errors
    /// [`Error::Config`] if a size is 0.
    pub fn new(in_features: usize, out_features: usize, rng: &mut impl Rng) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::Config {
                layer: "Linear",
                msg: format!("{in_features} -> {out_features} features: both must be at least 1"),
            });
        }
        let weight =
            Tensor::xavier_uniform([out_features, in_features], in_features, out_features, rng)?;
        Ok(Linear {
            weight: Param::new(weight),
            precision: Precision::Fp32,
        })
    }

    /// (O, F).
    fn dims(&self) -> (usize, usize) {
        let d = self.weight.value.dims();
        (d[0], d[1])
    }

    /// x: (N, F) -> y: (N, O). `mode` makes no difference to this layer.
    ///
    /// # Errors
    /// x is not (N, F).
    pub fn forward(&self, x: Tensor, _mode: Mode) -> Result<(Tensor, LinearCache)> {
        let _timer = profile::timed(LayerKind::Linear, Pass::Forward);
        let (o, f) = self.dims();
        let n = match *x.dims() {
            [n, xf] if xf == f => n,
            _ => {
                return Err(tensor_core::Error::ShapeMismatch {
                    op: "Linear::forward",
                    what: "x",
                    got: x.shape().clone(),
                    expected: format!("(N, {f})"),
                }
                .into())
            }
        };
        let mut y = x.new_zeros([n, o])?;
        matmul_in(
            self.precision,
            1.0,
            &x,
            Trans::No,
            &self.weight.value,
            Trans::Yes,
            0.0,
            &mut y,
        )?;
        Ok((y, LinearCache { x }))
    }

    /// dy: (N, O) -> dx: (N, F), fresh; dweight accumulated into `self.weight.grad`.
    ///
    /// # Errors
    /// dy is not (N, O) for the forward's N.
    pub fn backward(&mut self, dy: &Tensor, cache: LinearCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::Linear, Pass::Backward);
        let (o, f) = self.dims();
        let n = cache.x.dims()[0];
        dy.expect_shape("Linear::backward", "dy", &[n, o])?;
        let mut dx = dy.new_zeros([n, f])?;
        matmul_in(
            self.precision,
            1.0,
            dy,
            Trans::No,
            &self.weight.value,
            Trans::No,
            0.0,
            &mut dx,
        )?;
        matmul_in(
            self.precision,
            1.0,
            dy,
            Trans::Yes,
            &cache.x,
            Trans::No,
            1.0,
            &mut self.weight.grad,
        )?;
        Ok(dx)
    }
}

impl Parameters for Linear {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&join(prefix, "weight"), &mut self.weight);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gradcheck::Probe;

    /// As the convolution's test (conv2d.rs): the layer in TF32 and BF16 on the emulated device
    /// against FP32 on the CPU, within (2u + 2 terms 2^-24) of the sums of |term|.
    #[test]
    fn emu_tensor_core_precisions_match_fp32_within_their_rounding() {
        use crate::conv2d::tests::{abs, within_rounding};
        use kernels::precision::{BF16_UNIT_ROUNDOFF, TF32_UNIT_ROUNDOFF};
        use tensor_core::Device;

        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (n, f, o) = (5, 37, 11);
        let fc = Linear::new(f, o, &mut rng).unwrap();
        let x = Tensor::uniform([n, f], -1.0, 1.0, &mut rng).unwrap();
        let dy = Tensor::uniform([n, o], -1.0, 1.0, &mut rng).unwrap();
        let run = |mut fc: Linear, x: &Tensor, dy: &Tensor, device: Device| {
            crate::params_to_device(&mut fc, device).unwrap();
            let (y, cache) = fc
                .forward(crate::into_device(x.clone(), device).unwrap(), Mode::Train)
                .unwrap();
            let dx = fc
                .backward(&crate::into_device(dy.clone(), device).unwrap(), cache)
                .unwrap();
            (y, dx, fc.weight.grad)
        };
        let (y, dx, dw) = run(fc.clone(), &x, &dy, Device::Cpu);
        let mut magnitude = fc.clone();
        magnitude.weight.value = abs(&fc.weight.value);
        let (y_mag, dx_mag, dw_mag) = run(magnitude, &abs(&x), &abs(&dy), Device::Cpu);
        let mut modes = vec![
            (Precision::Tf32, TF32_UNIT_ROUNDOFF, Device::CudaEmu),
            (Precision::Bf16, BF16_UNIT_ROUNDOFF, Device::CudaEmu),
        ];
        // And BF16 on the CPU where it runs (FP32 products of operands rounded to BF16).
        if kernels::conv2d::bf16_available() {
            modes.push((Precision::Bf16, BF16_UNIT_ROUNDOFF, Device::Cpu));
        }
        for (precision, u, device) in modes {
            let tc = Linear {
                precision,
                ..fc.clone()
            };
            let (ty, tdx, tdw) = run(tc, &x, &dy, device);
            let p = format!("{} on {device}", precision.name());
            within_rounding(&format!("{p} y"), &ty, &y, &y_mag, u, f);
            within_rounding(&format!("{p} dx"), &tdx, &dx, &dx_mag, u, o);
            within_rounding(&format!("{p} dweight"), &tdw, &dw, &dw_mag, u, n);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let (n, f, o) = (3, 7, 5);
        let mut fc = Linear::new(f, o, &mut rng).unwrap();
        let x = Tensor::uniform([n, f], -1.0, 1.0, &mut rng).unwrap();
        let r = Tensor::uniform([n, o], -1.0, 1.0, &mut rng).unwrap();
        let (_, cache) = fc.forward(x.clone(), Mode::Train).unwrap();
        let dx = fc.backward(&r, cache).unwrap();

        // Linear in x and in the weight.
        let probe = Probe::linear(&r);
        let forward = |fc: &Linear, x: Tensor| fc.forward(x, Mode::Train).unwrap().0;
        probe.assert_gradient("dx", &x, &dx, |x| forward(&fc, x));
        probe.assert_param_gradients("Linear", &mut fc, |fc| forward(fc, x.clone()));
    }

    #[test]
    fn forward_is_x_times_weight_transposed() {
        let mut rng = ChaCha8Rng::seed_from_u64(22);
        let mut fc = Linear::new(3, 2, &mut rng).unwrap();
        fc.weight.value = Tensor::from_vec([2, 3], vec![1.0, 0.0, -1.0, 2.0, 1.0, 0.5]).unwrap();
        let x = Tensor::from_vec([1, 3], vec![1.0, 2.0, 4.0]).unwrap();
        let (y, _) = fc.forward(x, Mode::Eval).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[-3.0, 6.0]);
        let limit = (6.0f32 / 5.0).sqrt();
        let fresh = Linear::new(3, 2, &mut rng).unwrap();
        assert!(fresh.weight.value.to_vec().iter().all(|v| v.abs() <= limit));
        let mut names = Vec::new();
        fc.visit_params("fc1", &mut |name, p| {
            names.push((name.to_string(), p.value.len()))
        });
        assert_eq!(names, [("fc1.weight".to_string(), 6)]);
    }

    #[test]
    fn bad_shapes_and_sizes_are_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(23);
        let e = Linear::new(0, 4, &mut rng).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Linear: 0 -> 4 features: both must be at least 1"
        );
        let mut fc = Linear::new(6, 4, &mut rng).unwrap();
        let e = fc.forward(Tensor::zeros([2, 5]), Mode::Train).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Linear::forward: x has shape (2, 5), expected (N, 6)"
        );
        let e = fc
            .forward(Tensor::zeros([2, 6, 1]), Mode::Train)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Linear::forward: x has shape (2, 6, 1), expected (N, 6)"
        );
        let (_, cache) = fc.forward(Tensor::zeros([2, 6]), Mode::Train).unwrap();
        let e = fc.backward(&Tensor::zeros([3, 4]), cache).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Linear::backward: dy has shape (3, 4), expected (2, 4)"
        );
    }
}

//! The convolution layer (no bias), on the GEMM-based kernels of [`kernels::conv2d`].

use kernels::conv2d::{
    conv2d_backward_data_in, conv2d_backward_weight_in, conv2d_forward_in, Conv2dDims,
};
pub use kernels::conv2d::{Conv2dAlgo, Conv2dGeom};
use kernels::precision::Precision;
use rand::Rng;
use tensor_core::{Shape, Tensor};

use crate::profile::{self, LayerKind, Pass};
use crate::{join, Error, Mode, Param, Parameters, Result};

/// 2-D convolution without bias, a cross-correlation as every framework computes it:
/// x: (N, C, H, W) -> y: (N, K, OH, OW), weight: (K, C, KH, KW), square kernel, the same stride
/// and zero padding on both axes.
///
/// The formulas, forward and backward, and their matrix form on the im2col matrix:
/// `docs/walkthrough.md`, "Convolution", in its sections 2 and 3. `dweight` is
/// accumulated; `dx` is a fresh tensor.
///
/// Initialisation: Xavier uniform with fan_in = KH KW C and fan_out = KH KW K.
///
/// The arithmetic is [`Conv2dAlgo::choose`]'s pick for each call's shape and pass (direct im2col,
/// Winograd F(2x2) or F(4x4)), unless [`Conv2d::with_algo`] pins one for all three passes. On a
/// CUDA device, [`Conv2d::precision`] picks the FP32 kernels or the tensor-core ones (TF32 or
/// BF16 operands; the weight, its gradient and every output stay FP32).
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// weight: (K, C, KH, KW)
    pub weight: Param,
    pub geom: Conv2dGeom,
    /// The algorithm of every pass; `None`: [`Conv2dAlgo::choose`] per call and pass.
    pub algo: Option<Conv2dAlgo>,
    /// The number format of the three passes' products ([`Precision`]; FP32 by default).
    pub precision: Precision,
}

/// What [`Conv2d::backward`] needs from its forward: its input x, (N, C, H, W), or, once
/// [`Conv2dCache::forget_input`] dropped it, only x's shape (the caller then recomputes x and
/// passes it to [`Conv2d::backward_with_input`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dCache {
    x: CachedInput,
}

#[derive(Debug, Clone, PartialEq)]
enum CachedInput {
    Kept(Tensor),
    Forgotten(Shape),
}

impl Conv2dCache {
    /// The cache without its copy of x (its memory freed), keeping x's shape.
    pub fn forget_input(self) -> Conv2dCache {
        match self.x {
            CachedInput::Kept(x) => Conv2dCache {
                x: CachedInput::Forgotten(x.shape().clone()),
            },
            forgotten => Conv2dCache { x: forgotten },
        }
    }

    /// Whether the cache still holds x.
    pub fn keeps_input(&self) -> bool {
        matches!(self.x, CachedInput::Kept(_))
    }

    /// x's shape.
    fn x_shape(&self) -> &Shape {
        match &self.x {
            CachedInput::Kept(x) => x.shape(),
            CachedInput::Forgotten(shape) => shape,
        }
    }
}

impl Conv2d {
    /// A convolution from `in_channels` (C) to `out_channels` (K) with a `kernel` x `kernel`
    /// window, Xavier-uniform initialised from `rng`.
    ///
    /// # Errors
    /// [`Error::Config`] if a size or the stride is 0.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        geom: Conv2dGeom,
        rng: &mut impl Rng,
    ) -> Result<Conv2d> {
        if in_channels == 0 || out_channels == 0 || kernel == 0 || geom.stride == 0 {
            return Err(Error::Config {
                layer: "Conv2d",
                msg: format!(
                    "{in_channels} -> {out_channels} channels, kernel {kernel}, stride {}: \
                     all must be at least 1",
                    geom.stride
                ),
            });
        }
        let window = kernel * kernel;
        let weight = Tensor::xavier_uniform(
            [out_channels, in_channels, kernel, kernel],
            window * in_channels,
            window * out_channels,
            rng,
        )?;
        Ok(Conv2d {
            weight: Param::new(weight),
            geom,
            algo: None,
            precision: Precision::Fp32,
        })
    }

    /// This convolution with every pass computed by `algo` (tests pin each algorithm this way).
    /// A Winograd algorithm on a convolution it cannot compute (not 3x3, stride 1, pad 1) makes
    /// `forward` and `backward` return the kernel's `Err`.
    pub fn with_algo(self, algo: Conv2dAlgo) -> Conv2d {
        Conv2d {
            algo: Some(algo),
            ..self
        }
    }

    /// x: (N, C, H, W) -> y: (N, K, OH, OW). `mode` makes no difference to a convolution.
    ///
    /// # Errors
    /// x is not rank 4, has the wrong channel count, or is smaller than the kernel.
    pub fn forward(&self, x: Tensor, _mode: Mode) -> Result<(Tensor, Conv2dCache)> {
        let _timer = profile::timed(LayerKind::Conv, Pass::Forward);
        let d = Conv2dDims::new(
            "Conv2d::forward",
            x.dims(),
            self.weight.value.dims(),
            self.geom,
        )?;
        let mut y = x.new_zeros(d.y_dims())?;
        let (p, w) = (self.precision, &self.weight.value);
        conv2d_forward_in(p, self.algo, &mut y, &x, w, self.geom)?;
        Ok((
            y,
            Conv2dCache {
                x: CachedInput::Kept(x),
            },
        ))
    }

    /// dy: (N, K, OH, OW) -> dx: (N, C, H, W), fresh; dweight accumulated into
    /// `self.weight.grad`.
    ///
    /// # Errors
    /// dy's shape is not the forward's output shape.
    pub fn backward(&mut self, dy: &Tensor, cache: Conv2dCache) -> Result<Tensor> {
        match &cache.x {
            CachedInput::Kept(x) => self.backward_from(dy, x),
            CachedInput::Forgotten(shape) => Err(Error::Config {
                layer: "Conv2d",
                msg: format!(
                    "backward: the cache forgot its input x {shape}; pass it to \
                     backward_with_input"
                ),
            }),
        }
    }

    /// [`Conv2d::backward`] with the forward's input x given again (recomputed by the caller
    /// after [`Conv2dCache::forget_input`]); it must be the very tensor the forward saw.
    ///
    /// # Errors
    /// x's shape is not the forward's input shape, or dy's not its output shape.
    pub fn backward_with_input(
        &mut self,
        dy: &Tensor,
        x: &Tensor,
        cache: Conv2dCache,
    ) -> Result<Tensor> {
        if x.shape() != cache.x_shape() {
            return Err(Error::Config {
                layer: "Conv2d",
                msg: format!(
                    "backward_with_input: x has shape {}, the forward's input had {}",
                    x.shape(),
                    cache.x_shape()
                ),
            });
        }
        self.backward_from(dy, x)
    }

    fn backward_from(&mut self, dy: &Tensor, x: &Tensor) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::Conv, Pass::Backward);
        let mut dx = dy.new_zeros(x.shape().clone())?;
        let (p, algo, geom) = (self.precision, self.algo, self.geom);
        conv2d_backward_data_in(p, algo, &mut dx, dy, &self.weight.value, geom)?;
        conv2d_backward_weight_in(p, algo, &mut self.weight.grad, dy, x, geom)?;
        Ok(dx)
    }
}

impl Parameters for Conv2d {
    fn visit_params(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        f(&join(prefix, "weight"), &mut self.weight);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::gradcheck::Probe;

    fn gradcheck(geom: Conv2dGeom, kernel: usize, algo: Conv2dAlgo) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (n, c, k, h, w) = (2, 3, 4, 5, 7);
        let mut conv = Conv2d::new(c, k, kernel, geom, &mut rng)
            .unwrap()
            .with_algo(algo);
        let x = Tensor::uniform([n, c, h, w], -1.0, 1.0, &mut rng).unwrap();
        let (y, cache) = conv.forward(x.clone(), Mode::Train).unwrap();
        let r = Tensor::uniform(y.dims(), -1.0, 1.0, &mut rng).unwrap();
        let dx = conv.backward(&r, cache).unwrap();
        let case = format!("{}: kernel {kernel} {geom:?}", algo.name());

        // Linear in x and in the weight.
        let probe = Probe::linear(&r);
        let forward = |conv: &Conv2d, x: Tensor| conv.forward(x, Mode::Train).unwrap().0;
        probe.assert_gradient(&format!("{case}: dx"), &x, &dx, |x| forward(&conv, x));
        probe.assert_param_gradients(&case, &mut conv, |conv| forward(conv, x.clone()));
    }

    /// Every value of `t`'s magnitude, on the CPU.
    pub(crate) fn abs(t: &Tensor) -> Tensor {
        let v = t.try_to_vec().unwrap().iter().map(|v| v.abs()).collect();
        Tensor::from_vec(t.dims(), v).unwrap()
    }

    /// Asserts |got - want| <= (2 u + 2 terms 2^-24) magnitude, value by value.
    pub(crate) fn within_rounding(
        what: &str,
        got: &Tensor,
        want: &Tensor,
        magnitude: &Tensor,
        u: f32,
        terms: usize,
    ) {
        let (got, want, magnitude) = (got.try_to_vec().unwrap(), want.to_vec(), magnitude.to_vec());
        let rel = 2.0 * u + 2.0 * terms as f32 * f32::EPSILON / 2.0;
        for (i, ((&g, &w), &m)) in got.iter().zip(&want).zip(&magnitude).enumerate() {
            assert!(
                (g - w).abs() <= rel * m,
                "{what}: first mismatch at {i}: {g} vs fp32 {w} (bound {})",
                rel * m
            );
        }
    }

    /// In TF32 and BF16 on the emulated device, the layer's forward, dx and dweight against the
    /// FP32 layer's on the CPU. Each value sums `terms` products whose two operands are each
    /// rounded once in the tensor-core modes (a relative error of at most 2u + u^2, u the mode's
    /// unit roundoff), and both devices add them in FP32 (at most terms 2^-24 each, Higham's
    /// bound): |tc - fp32| <= (2u + 2 terms 2^-24) sum |term|, the sums of |term| given by the
    /// same layer on |x|, |weight| and |dy|.
    #[test]
    fn emu_tensor_core_precisions_match_fp32_within_their_rounding() {
        use kernels::precision::{BF16_UNIT_ROUNDOFF, TF32_UNIT_ROUNDOFF};
        use tensor_core::Device;

        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, c, k, h, w) = (2, 4, 6, 7, 9);
        let conv = Conv2d::new(c, k, 3, Conv2dGeom::SAME_3X3, &mut rng).unwrap();
        let x = Tensor::uniform([n, c, h, w], -1.0, 1.0, &mut rng).unwrap();
        let dy = Tensor::uniform([n, k, h, w], -1.0, 1.0, &mut rng).unwrap();
        let run = |mut conv: Conv2d, x: &Tensor, dy: &Tensor, device: Device| {
            crate::params_to_device(&mut conv, device).unwrap();
            let x = crate::into_device(x.clone(), device).unwrap();
            let (y, cache) = conv.forward(x, Mode::Train).unwrap();
            let dx = conv
                .backward(&crate::into_device(dy.clone(), device).unwrap(), cache)
                .unwrap();
            (y, dx, conv.weight.grad)
        };
        let (y, dx, dw) = run(conv.clone(), &x, &dy, Device::Cpu);
        let mut magnitude = conv.clone();
        magnitude.weight.value = abs(&conv.weight.value);
        let (y_mag, dx_mag, dw_mag) = run(magnitude, &abs(&x), &abs(&dy), Device::Cpu);
        for (precision, u) in [
            (Precision::Tf32, TF32_UNIT_ROUNDOFF),
            (Precision::Bf16, BF16_UNIT_ROUNDOFF),
        ] {
            let tc = Conv2d {
                precision,
                ..conv.clone()
            };
            let (ty, tdx, tdw) = run(tc, &x, &dy, Device::CudaEmu);
            let p = precision.name();
            within_rounding(&format!("{p} y"), &ty, &y, &y_mag, u, c * 9);
            within_rounding(&format!("{p} dx"), &tdx, &dx, &dx_mag, u, k * 9);
            within_rounding(&format!("{p} dweight"), &tdw, &dw, &dw_mag, u, n * h * w);
        }
    }

    /// BF16 on the CPU (the `vdpbf16ps` kernels for a "same" 3x3 convolution, the im2col path on
    /// rounded operands for a strided one) against the FP32 layer, within the bound of
    /// [`emu_tensor_core_precisions_match_fp32_within_their_rounding`]. Skipped, saying so, on a
    /// CPU without AVX-512 BF16.
    #[test]
    fn cpu_bf16_matches_fp32_within_its_rounding() {
        use kernels::precision::BF16_UNIT_ROUNDOFF as U;
        if !kernels::conv2d::bf16_available() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (n, c, k, h, w) = (3, 5, 6, 7, 9);
        for geom in [Conv2dGeom::SAME_3X3, Conv2dGeom { stride: 2, pad: 1 }] {
            let conv = Conv2d::new(c, k, 3, geom, &mut rng).unwrap();
            let x = Tensor::uniform([n, c, h, w], -1.0, 1.0, &mut rng).unwrap();
            let (oh, ow) = ((h + 2 - 3) / geom.stride + 1, (w + 2 - 3) / geom.stride + 1);
            let dy = Tensor::uniform([n, k, oh, ow], -1.0, 1.0, &mut rng).unwrap();
            let run = |mut conv: Conv2d, x: &Tensor, dy: &Tensor| {
                let (y, cache) = conv.forward(x.clone(), Mode::Train).unwrap();
                let dx = conv.backward(dy, cache).unwrap();
                (y, dx, conv.weight.grad)
            };
            let (y, dx, dw) = run(conv.clone(), &x, &dy);
            let mut magnitude = conv.clone();
            magnitude.weight.value = abs(&conv.weight.value);
            let (y_mag, dx_mag, dw_mag) = run(magnitude, &abs(&x), &abs(&dy));
            let bf16 = Conv2d {
                precision: Precision::Bf16,
                ..conv.clone()
            };
            let (by, bdx, bdw) = run(bf16, &x, &dy);
            let s = geom.stride;
            within_rounding(&format!("stride {s}: y"), &by, &y, &y_mag, U, c * 9);
            within_rounding(&format!("stride {s}: dx"), &bdx, &dx, &dx_mag, U, k * 9);
            within_rounding(
                &format!("stride {s}: dw"),
                &bdw,
                &dw,
                &dw_mag,
                U,
                n * oh * ow,
            );
            // Not FP32's values: the operands were rounded.
            assert_ne!(by.to_vec(), y.to_vec(), "stride {s}: bf16 gave fp32's bits");
        }
    }

    #[test]
    fn gradients_match_finite_differences_same_3x3_by_every_algorithm() {
        // 5x7 maps: partial tiles on the bottom and right for both Winograd tile sizes.
        for algo in Conv2dAlgo::ALL {
            gradcheck(Conv2dGeom::SAME_3X3, 3, algo);
        }
    }

    #[test]
    fn gradients_match_finite_differences_strided_and_padded() {
        gradcheck(Conv2dGeom { stride: 2, pad: 2 }, 3, Conv2dAlgo::Direct);
        gradcheck(Conv2dGeom { stride: 1, pad: 0 }, 1, Conv2dAlgo::Direct);
    }

    #[test]
    fn a_pinned_winograd_algorithm_refuses_other_geometries() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let geom = Conv2dGeom { stride: 2, pad: 1 };
        let conv = Conv2d::new(3, 4, 3, geom, &mut rng)
            .unwrap()
            .with_algo(Conv2dAlgo::Winograd4);
        let e = conv
            .forward(Tensor::zeros([1, 3, 6, 6]), Mode::Train)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conv2d_forward: Winograd F(4x4, 3x3) needs a 3x3 kernel, stride 1 and pad 1, not 3x3, \
             stride 2, pad 1"
        );
    }

    #[test]
    fn weight_grad_accumulates_and_init_is_xavier() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut conv = Conv2d::new(3, 4, 3, Conv2dGeom::SAME_3X3, &mut rng).unwrap();
        let limit = (6.0f32 / (27.0 + 36.0)).sqrt();
        assert!(conv.weight.value.to_vec().iter().all(|v| v.abs() <= limit));
        let x = Tensor::uniform([2, 3, 5, 5], -1.0, 1.0, &mut rng).unwrap();
        let dy = Tensor::uniform([2, 4, 5, 5], -1.0, 1.0, &mut rng).unwrap();
        let (_, cache) = conv.forward(x.clone(), Mode::Eval).unwrap();
        conv.backward(&dy, cache).unwrap();
        let once = conv.weight.grad.to_vec();
        let (_, cache) = conv.forward(x, Mode::Eval).unwrap();
        conv.backward(&dy, cache).unwrap();
        let twice: Vec<f32> = once.iter().map(|g| 2.0 * g).collect();
        assert_eq!(conv.weight.grad.to_vec(), twice);
        let mut names = Vec::new();
        conv.visit_params("conv1", &mut |name, p| {
            names.push((name.to_string(), p.value.len()))
        });
        assert_eq!(names, [("conv1.weight".to_string(), 4 * 3 * 9)]);
    }

    #[test]
    fn bad_shapes_and_sizes_are_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let e = Conv2d::new(3, 0, 3, Conv2dGeom::SAME_3X3, &mut rng).unwrap_err();
        assert!(e.to_string().starts_with("Conv2d: 3 -> 0 channels"), "{e}");
        let mut conv = Conv2d::new(3, 4, 3, Conv2dGeom::SAME_3X3, &mut rng).unwrap();
        let e = conv
            .forward(Tensor::zeros([2, 5, 6, 6]), Mode::Train)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Conv2d::forward: x (2, 5, 6, 6) has 5 channels, weight (4, 3, 3, 3) expects 3"
        );
        let (_, cache) = conv
            .forward(Tensor::zeros([2, 3, 6, 6]), Mode::Train)
            .unwrap();
        let e = conv
            .backward(&Tensor::zeros([2, 4, 6, 5]), cache)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conv2d_backward_data: dy has shape (2, 4, 6, 5), expected (2, 4, 6, 6)"
        );
    }

    #[test]
    fn a_forgotten_input_given_back_gives_the_same_bits_and_is_required() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let mut conv = Conv2d::new(3, 4, 3, Conv2dGeom::SAME_3X3, &mut rng).unwrap();
        let x = Tensor::uniform([2, 3, 6, 6], -1.0, 1.0, &mut rng).unwrap();
        let dy = Tensor::uniform([2, 4, 6, 6], -1.0, 1.0, &mut rng).unwrap();
        let (_, kept) = conv.forward(x.clone(), Mode::Train).unwrap();
        let forgotten = kept.clone().forget_input();
        assert!(kept.keeps_input() && !forgotten.keeps_input());

        let dx = conv.backward(&dy, kept).unwrap();
        let dw = std::mem::replace(&mut conv.weight.grad, Tensor::zeros([4, 3, 3, 3]));
        let e = conv.backward(&dy, forgotten.clone()).unwrap_err();
        assert!(
            e.to_string().contains("forgot its input x (2, 3, 6, 6)"),
            "{e}"
        );
        let e = conv
            .backward_with_input(&dy, &Tensor::zeros([2, 3, 6, 5]), forgotten.clone())
            .unwrap_err();
        assert!(e.to_string().contains("x has shape (2, 3, 6, 5)"), "{e}");
        assert_eq!(
            conv.weight.grad.to_vec(),
            vec![0.0; 4 * 3 * 9],
            "refusals change nothing"
        );

        let dx_again = conv.backward_with_input(&dy, &x, forgotten).unwrap();
        assert_eq!(dx_again.to_vec(), dx.to_vec());
        assert_eq!(conv.weight.grad.to_vec(), dw.to_vec());
    }
}

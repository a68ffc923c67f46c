//! Max-pooling with TensorFlow SAME padding.

use kernels::maxpool::{maxpool2d_backward, maxpool2d_forward, Pool2d, PoolIndices};
use tensor_core::Tensor;

use crate::profile::{self, LayerKind, Pass};
use crate::{Mode, Result};

/// Max over each window of each (H, W) plane, TensorFlow SAME padding: OH = ceil(H / stride),
/// the padding split with the smaller half before; padded cells never win (see
/// [`kernels::maxpool`]).
///
/// Forward keeps, per output, the index of the winning input in its plane (the first maximum on
/// ties). Backward routes each dy to its winner, adding up where overlapping windows share one;
/// `dx` is a fresh tensor. No parameters; the same in training and evaluation.
///
/// The formulas and the SAME geometry: `docs/walkthrough.md`, "Max-pooling", in its sections 2
/// and 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pool: Pool2d,
}

/// What [`MaxPool2d::backward`] needs from its forward.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxPoolCache {
    /// argmax: (N, C, OH, OW) indices h*W + w into each (H, W) plane of x, on x's device.
    argmax: PoolIndices,
    /// The forward's input shape, (N, C, H, W).
    x_dims: [usize; 4],
}

impl MaxPool2d {
    /// A `kernel` x `kernel` window moved by `stride`.
    ///
    /// # Errors
    /// `kernel` or `stride` is 0.
    pub fn new(kernel: usize, stride: usize) -> Result<MaxPool2d> {
        Ok(MaxPool2d {
            pool: Pool2d::square(kernel, stride)?,
        })
    }

    /// The seed's pool at the end of each residual block: 3x3, stride 2, SAME (32 -> 16).
    pub fn k3_s2_same() -> MaxPool2d {
        MaxPool2d {
            pool: Pool2d::square(3, 2).expect("3x3 stride 2 is a valid pool"),
        }
    }

    /// The window and stride.
    pub fn pool(&self) -> Pool2d {
        self.pool
    }

    /// x: (N, C, H, W) -> y: (N, C, OH, OW).
    ///
    /// # Errors
    /// x not rank 4, or with an empty plane.
    pub fn forward(&self, x: Tensor, _mode: Mode) -> Result<(Tensor, MaxPoolCache)> {
        let _timer = profile::timed(LayerKind::MaxPool, Pass::Forward);
        let out = self.pool.output_dims("MaxPool2d", &x)?;
        let mut y = x.new_zeros(out)?;
        let argmax = maxpool2d_forward(&mut y, &x, &self.pool)?;
        let (n, c, h, w) = x.expect_nchw("MaxPool2d", "x")?;
        let x_dims = [n, c, h, w];
        Ok((y, MaxPoolCache { argmax, x_dims }))
    }

    /// dy: (N, C, OH, OW) -> dx: (N, C, H, W), fresh.
    ///
    /// # Errors
    /// dy's shape differs from the forward's output.
    pub fn backward(&self, dy: &Tensor, cache: MaxPoolCache) -> Result<Tensor> {
        let _timer = profile::timed(LayerKind::MaxPool, Pass::Backward);
        let mut dx = dy.new_zeros(cache.x_dims)?;
        maxpool2d_backward(&mut dx, dy, &cache.argmax, &self.pool)?;
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use tensor_core::Device;

    use super::*;
    use crate::gradcheck::Probe;

    /// Inputs are distinct multiples of SPACING apart, so a step of
    /// [`LINEAR_EPS`](crate::gradcheck::LINEAR_EPS) < SPACING / 2 never changes a window's winner
    /// and max-pool is linear around them.
    const SPACING: f32 = 0.05;

    /// A random permutation of 0, SPACING, 2 SPACING, ..., shifted to straddle 0.
    fn tie_free(dims: [usize; 4], seed: u64) -> Tensor {
        let n: usize = dims.iter().product();
        let mut v: Vec<f32> = (0..n)
            .map(|i| (i as f32 - n as f32 / 2.0) * SPACING)
            .collect();
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        Tensor::from_vec(dims, v).unwrap()
    }

    fn gradcheck(pool: &MaxPool2d, dims: [usize; 4], seed: u64) {
        let x = tie_free(dims, seed);
        let (y, cache) = pool.forward(x.clone(), Mode::Train).unwrap();
        let r = Tensor::uniform(
            y.dims(),
            -1.0,
            1.0,
            &mut ChaCha8Rng::seed_from_u64(seed + 1),
        )
        .unwrap();
        let dx = pool.backward(&r, cache).unwrap();
        Probe::linear(&r)
            .assert_gradient("dx", &x, &dx, |x| pool.forward(x, Mode::Train).unwrap().0);
    }

    #[test]
    fn gradients_match_finite_differences_for_the_seed_pool() {
        // 7 x 9 planes: overlapping windows, padding on both sides of the rows.
        gradcheck(&MaxPool2d::k3_s2_same(), [2, 3, 7, 9], 1);
    }

    #[test]
    fn gradients_match_finite_differences_with_stride_one() {
        // Every input sits in up to nine windows: the routed gradients add up.
        gradcheck(&MaxPool2d::new(3, 1).unwrap(), [1, 2, 5, 5], 2);
    }

    #[test]
    fn seed_pool_maps_32_to_16_and_padding_never_wins() {
        let pool = MaxPool2d::k3_s2_same();
        // All negative: a zero-valued padded cell would win every window on the border.
        let x = Tensor::full([2, 3, 32, 32], -1.0);
        let (y, cache) = pool.forward(x, Mode::Eval).unwrap();
        assert_eq!(y.dims(), &[2, 3, 16, 16]);
        assert!(y.to_vec().iter().all(|&v| v == -1.0));
        let dx = pool
            .backward(&Tensor::full([2, 3, 16, 16], 1.0), cache)
            .unwrap();
        assert_eq!(dx.dims(), &[2, 3, 32, 32]);
        // Ties go to the first cell of each window: (2i, 2j), 0 padding before.
        let dx = dx.to_vec();
        assert_eq!(dx[0], 1.0);
        assert_eq!(dx[2 * 32 + 2], 1.0);
        assert_eq!(dx[30 * 32 + 30], 1.0);
        assert_eq!(dx[31 * 32 + 31], 0.0);
        assert_eq!(dx.iter().sum::<f32>(), (2 * 3 * 256) as f32);
    }

    #[test]
    fn emu_forward_and_backward_match_the_cpu_with_the_indices_on_the_device() {
        let emu = |t: &Tensor| kernels::cuda::to_device(t, Device::CudaEmu).unwrap();
        let pool = MaxPool2d::k3_s2_same();
        let x = tie_free([2, 3, 9, 7], 4);
        let (y, cache) = pool.forward(x.clone(), Mode::Train).unwrap();
        let (ey, ecache) = pool.forward(emu(&x), Mode::Train).unwrap();
        assert_eq!(ecache.argmax.device(), Device::CudaEmu);
        assert_eq!((ey.device(), ey.to_vec()), (Device::CudaEmu, y.to_vec()));
        let dy = Tensor::uniform(y.dims(), -1.0, 1.0, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        let dx = pool.backward(&dy, cache).unwrap();
        let edx = pool.backward(&emu(&dy), ecache).unwrap();
        assert_eq!((edx.device(), edx.to_vec()), (Device::CudaEmu, dx.to_vec()));
    }

    #[test]
    fn bad_shapes_name_the_op_and_the_shapes() {
        let pool = MaxPool2d::k3_s2_same();
        let e = pool
            .forward(Tensor::zeros([3, 8, 8]), Mode::Eval)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "MaxPool2d: x has shape (3, 8, 8), expected rank 4 (N, C, H, W)"
        );
        let (_, cache) = pool
            .forward(Tensor::zeros([1, 2, 8, 8]), Mode::Eval)
            .unwrap();
        let e = pool
            .backward(&Tensor::zeros([1, 2, 8, 8]), cache)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "maxpool2d_backward: dy has shape (1, 2, 8, 8), expected (1, 2, 4, 4)"
        );
        let e = MaxPool2d::new(0, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Pool2d::new: kernel (0, 0) and stride (2, 2) must be at least 1"
        );
    }
}

//! Max-pooling over each (H, W) plane with TensorFlow's SAME padding.
//!
//! Along each axis, for an input of size `in`, window `k` and stride `s`:
//! `out = ceil(in / s)`, total padding `max((out - 1) * s + k - in, 0)`, of which the smaller half
//! goes before (top, left) and the larger after (bottom, right). For 3x3 stride 2 on 32 that is
//! 16 outputs, 0 padding before and 1 after. Padded cells are not values: they never win the max,
//! even where every real value is negative.
//!
//! Forward records, per output, the index of the winning input in its (H, W) plane (the first
//! maximum in row-major order on ties); backward routes each dy to that input, adding up where
//! overlapping windows chose the same input:
//!
//! ```text
//! y[o]  = x[argmax[o]]
//! dx[i] = sum over outputs o of the same plane with argmax[o] = i of dy[o]
//! ```

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;

use tensor_core::{Device, Tensor};

use crate::cuda::{dispatch, Backend, DeviceVec, DeviceVecBackend, TensorBackend};
use crate::{Error, Result};

/// TensorFlow SAME padding along one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamePadding {
    /// Output size, ceil(in / stride).
    pub out: usize,
    /// Padding before the first input (top or left), the smaller half.
    pub before: usize,
    /// Padding after the last input (bottom or right), the larger half.
    pub after: usize,
}

/// SAME padding for an axis of `input` values, window `kernel` and step `stride`.
///
/// # Errors
/// [`Error::Invalid`] if `kernel` or `stride` is 0.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> Result<SamePadding> {
    if kernel == 0 || stride == 0 {
        return Err(Error::Invalid {
            op: "same_padding",
            msg: format!("kernel {kernel} and stride {stride} must be at least 1"),
        });
    }
    Ok(same(input, kernel, stride))
}

/// [`same_padding`] for a kernel and stride already known to be at least 1.
fn same(input: usize, kernel: usize, stride: usize) -> SamePadding {
    let out = input.div_ceil(stride);
    let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(input);
    SamePadding {
        out,
        before: total / 2,
        after: total - total / 2,
    }
}

/// A pooling window and its stride, both at least 1; padding is TensorFlow SAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    kernel: (usize, usize),
    stride: (usize, usize),
}

/// Where the windows of a [`Pool2d`] fall on an H x W plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub h: usize,
    pub w: usize,
    pub rows: SamePadding,
    pub cols: SamePadding,
}

impl Pool2d {
    /// A (kernel_h, kernel_w) window moved by (stride_h, stride_w).
    ///
    /// # Errors
    /// [`Error::Invalid`] if any size is 0.
    pub fn new(kernel: (usize, usize), stride: (usize, usize)) -> Result<Pool2d> {
        if kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            return Err(Error::Invalid {
                op: "Pool2d::new",
                msg: format!("kernel {kernel:?} and stride {stride:?} must be at least 1"),
            });
        }
        Ok(Pool2d { kernel, stride })
    }

    /// A `kernel` x `kernel` window moved by `stride` along both axes.
    ///
    /// # Errors
    /// [`Error::Invalid`] if either is 0.
    pub fn square(kernel: usize, stride: usize) -> Result<Pool2d> {
        Pool2d::new((kernel, kernel), (stride, stride))
    }

    /// (kernel_h, kernel_w).
    pub fn kernel(&self) -> (usize, usize) {
        self.kernel
    }

    /// (stride_h, stride_w).
    pub fn stride(&self) -> (usize, usize) {
        self.stride
    }

    /// Output size and padding on an `h` x `w` plane.
    pub fn geometry(&self, h: usize, w: usize) -> PoolGeometry {
        PoolGeometry {
            h,
            w,
            rows: same(h, self.kernel.0, self.stride.0),
            cols: same(w, self.kernel.1, self.stride.1),
        }
    }

    /// The output shape (N, C, OH, OW) for an input of shape (N, C, H, W).
    ///
    /// # Errors
    /// x is not rank 4, or a plane is empty or has more cells than a u32 index can name.
    pub fn output_dims(&self, op: &'static str, x: &Tensor) -> Result<[usize; 4]> {
        let (n, c, h, w) = x.expect_nchw(op, "x")?;
        check_plane(op, "x", x, h, w)?;
        let g = self.geometry(h, w);
        Ok([n, c, g.rows.out, g.cols.out])
    }
}

fn check_plane(op: &'static str, what: &str, t: &Tensor, h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 || (h * w) as u64 > u32::MAX as u64 + 1 {
        return Err(Error::Shape {
            op,
            msg: format!(
                "{what} has shape {}: a plane needs 1 to 2^32 cells",
                t.shape()
            ),
        });
    }
    Ok(())
}

/// The forward's winners, kept on the device of its tensors for the backward: per output, the
/// index h*W + w of the winning input in its (H, W) plane, (N, C, OH, OW) values.
///
/// On a GPU the indices never visit the host: [`maxpool2d_forward`] writes them where y lives
/// and [`maxpool2d_backward`] reads them there.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolIndices(DeviceVec<u32>);

impl PoolIndices {
    /// Indices held in host memory, for the CPU backward (which checks that each lies inside its
    /// plane). argmax: (N, C, OH, OW) values.
    pub fn from_host(argmax: Vec<u32>) -> PoolIndices {
        PoolIndices(DeviceVec::Cpu(argmax))
    }

    /// The device the indices live on.
    pub fn device(&self) -> Device {
        self.0.device()
    }

    /// How many indices: one per output value.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A host copy (from a GPU, a copy that waits for the queued work: for tests and inspection).
    ///
    /// # Errors
    /// [`Error::Device`] if a device copy fails.
    pub fn to_host(&self) -> Result<Vec<u32>> {
        self.0.to_host()
    }
}

/// Max-pool forward; returns the winners for [`maxpool2d_backward`], on x's device.
///
/// # Shapes
/// x: (N, C, H, W) -> y: (N, C, OH, OW), overwritten; the indices: (N, C, OH, OW), each the index
/// h*W + w of the winner in its (H, W) plane.
///
/// # Errors
/// x not rank 4 or with an empty plane, y of the wrong shape, mixed devices.
pub fn maxpool2d_forward(y: &mut Tensor, x: &Tensor, p: &Pool2d) -> Result<PoolIndices> {
    const OP: &str = "maxpool2d_forward";
    let out = p.output_dims(OP, x)?;
    y.expect_shape(OP, "y", &out)?;
    let (n, c, h, w) = x.expect_nchw(OP, "x")?;
    let argmax = dispatch!(OP, [("y", y), ("x", x)],
        cpu => {
            let mut argmax = vec![0u32; y.len()];
            let g = p.geometry(h, w);
            cpu::forward(y.as_mut_slice()?, &mut argmax, x.as_slice()?, p, &g);
            Ok(DeviceVec::Cpu(argmax))
        },
        cuda |b| => {
            let mut argmax = b.alloc::<u32>(y.len())?;
            let (yb, xb) = (b.buf_mut(OP, y)?, b.buf(OP, x)?);
            cuda::maxpool_forward(b, yb, &mut argmax, xb, [n, c, h, w], p)?;
            Ok(b.wrap(argmax))
        },
    )?;
    Ok(PoolIndices(argmax))
}

/// Max-pool backward; `argmax` is what the forward returned.
///
/// On the CPU every index is checked to lie inside its plane. On a device the indices are not
/// read back to check (that would wait for all queued work): the kernel adds each dy only to
/// the cell its index names within the output's own window, so no index can reach outside dx.
///
/// # Shapes
/// dy: (N, C, OH, OW), argmax: N*C*OH*OW values -> dx: (N, C, H, W), overwritten.
///
/// # Errors
/// dx not rank 4 or with an empty plane, dy of the wrong shape, argmax of the wrong length, on
/// another device than dx and dy, or (on the CPU) pointing outside its plane.
pub fn maxpool2d_backward(
    dx: &mut Tensor,
    dy: &Tensor,
    argmax: &PoolIndices,
    p: &Pool2d,
) -> Result<()> {
    const OP: &str = "maxpool2d_backward";
    let (n, c, h, w) = dx.expect_nchw(OP, "dx")?;
    check_plane(OP, "dx", dx, h, w)?;
    let g = p.geometry(h, w);
    dy.expect_shape(OP, "dy", &[n, c, g.rows.out, g.cols.out])?;
    check_argmax_len(OP, argmax.len(), dy)?;
    dispatch!(OP, [("dx", dx), ("dy", dy)],
        cpu => {
            let argmax = host_argmax(OP, argmax, dx)?;
            cpu::backward(dx.as_mut_slice()?, dy.as_slice()?, argmax, &g);
            Ok(())
        },
        cuda |b| => {
            let (dxb, dyb) = (b.buf_mut(OP, dx)?, b.buf(OP, dy)?);
            let argmax = b.vec_buf(OP, "argmax", &argmax.0)?;
            cuda::maxpool_backward(b, dxb, dyb, argmax, [n, c, h, w], p)
        },
    )
}

/// The indices of `argmax` in host memory, each checked to lie inside a plane of `dx`
/// (N, C, H, W): an error naming `op` for indices on a device or outside.
fn host_argmax<'a>(op: &'static str, argmax: &'a PoolIndices, dx: &Tensor) -> Result<&'a [u32]> {
    let (h, w) = (dx.dims()[2], dx.dims()[3]);
    let argmax = argmax.0.as_host().ok_or_else(|| {
        Error::from(tensor_core::Error::MixedDevices {
            op,
            what: "argmax",
            got: argmax.device(),
            expected: Device::Cpu,
        })
    })?;
    if let Some(i) = argmax.iter().position(|&a| a as usize >= h * w) {
        return Err(Error::Invalid {
            op,
            msg: format!(
                "argmax[{i}] = {} is outside a {h} x {w} plane of dx {}",
                argmax[i],
                dx.shape()
            ),
        });
    }
    Ok(argmax)
}

fn check_argmax_len(op: &'static str, len: usize, y: &Tensor) -> Result<()> {
    if len == y.len() {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            msg: format!(
                "argmax holds {len} indices, output {} has {} values",
                y.shape(),
                y.len()
            ),
        })
    }
}

#[cfg(test)]
mod tests;

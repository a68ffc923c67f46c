//! DropBlock (Ghiasi et al., 2018) as the seed's TensorFlow `DropBlock.py` computes it.
//!
//! On an (N, C, H, W) map with block size b and keep probability k:
//! 1. gamma = (1 - k) * (W*H) / b^2 / ((W - b + 1) * (H - b + 1)).
//! 2. Block centres: Bernoulli(gamma) on an (H-b+1) x (W-b+1) grid per sample and channel; centre
//!    (n, c, i, j) is drawn iff `key.uniform(e) < gamma` with e = ((n*C + c)*(H-b+1) + i)*(W-b+1) + j.
//! 3. The grid is padded with p0 = (b-1) - (b-1)/2 zeros before and (b-1)/2 after on each axis
//!    back to H x W, max-pooled b x b with stride 1 and TensorFlow SAME padding ((b-1)/2 before),
//!    and mask = 1 - pooled.
//! 4. y = x * mask * scale with scale = mask.len() / mask.sum(), the sum over the whole
//!    (N, C, H, W) mask, as the seed's `output * size(mask) / reduce_sum(mask)` does.
//!
//! Steps 2-3 in closed form: pooled output (y, x) sees padded rows y - (b-1)/2 ..= y + b-1-(b-1)/2,
//! which holds grid row i (padded row i + p0) iff i <= y <= i + b - 1, because p0 + (b-1)/2 = b - 1;
//! likewise for columns. So a centre at (i, j) drops exactly the b x b square whose top-left corner
//! is (i, j), always inside the map. `cpu.rs` builds the mask that way; the tests compare it with a
//! literal pad + max-pool.
//!
//! Identity (no mask at all) when k = 1, and when H < b or W < b: the seed's sampling grid is then
//! empty and DropBlock passes x through. The mask sum is an integer count, so it is exact and does
//! not depend on the thread count; when every value is dropped the scale is 0 (y = 0), never a
//! division by zero.
//!
//! The scale is computed once, in f64 and rounded to f32, and each kept value is multiplied by it;
//! TensorFlow multiplies by the size and divides by the sum per value, which can differ in the
//! last bit.
//!
//! # Shapes
//! mask: (N, C, H, W) bytes, scale: one value, both on the map's device; x, y, dy, dx:
//! (N, C, H, W).

mod cpu;
pub mod cuda;
#[cfg(test)]
mod cuda_tests;
#[cfg(test)]
mod tests;

use tensor_core::{Device, Shape, Tensor};

use crate::cuda::{dispatch, Backend, DeviceVec, DeviceVecBackend, TensorBackend};

use crate::dropout::check_keep_prob;
use crate::philox::MaskKey;
use crate::{Error, Result};

/// gamma = (1 - k) * (W*H) / b^2 / ((W - b + 1) * (H - b + 1)), the rate of block centres that
/// drops about a fraction 1 - k of the map. Only meaningful when H >= b and W >= b.
pub fn dropblock_gamma(h: usize, w: usize, block: usize, keep: f32) -> f32 {
    let (hf, wf, bf) = (h as f64, w as f64, block as f64);
    ((1.0 - keep as f64) * (wf * hf) / (bf * bf) / ((wf - bf + 1.0) * (hf - bf + 1.0))) as f32
}

/// One DropBlock draw: which values are kept, and the factor that rescales them, on the device
/// of the map it was drawn for (on a GPU neither ever visits the host).
#[derive(Debug, Clone, PartialEq)]
pub struct DropBlockMask {
    /// The (N, C, H, W) shape of the map it was drawn for.
    shape: Shape,
    /// keep: (N, C, H, W), 1 where the value is kept, 0 where a block dropped it.
    keep: DeviceVec<u8>,
    /// scale: (1), mask.len() / mask.sum(), or 0 when the mask is all zeros.
    scale: DeviceVec<f32>,
}

impl DropBlockMask {
    /// The (N, C, H, W) shape of the map it was drawn for.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The device the mask lives on.
    pub fn device(&self) -> Device {
        self.keep.device()
    }

    /// A host copy of the mask: (N, C, H, W), 1 kept, 0 dropped (from a GPU, a copy that waits
    /// for the queued work: for tests and inspection).
    ///
    /// # Errors
    /// [`Error::Device`] if a device copy fails.
    pub fn keep(&self) -> Result<Vec<u8>> {
        self.keep.to_host()
    }

    /// The rescale factor mask.len() / mask.sum(), 0 for an all-zero mask (from a GPU, read back
    /// as [`DropBlockMask::keep`] is).
    ///
    /// # Errors
    /// [`Error::Device`] if a device copy fails.
    pub fn scale(&self) -> Result<f32> {
        Ok(self.scale.to_host()?[0])
    }
}

/// Draws the DropBlock mask for a map of `shape` (N, C, H, W) on `device`, where it stays.
///
/// On a CUDA device the `dropblock_mask` kernel draws it (the same Philox draws, so the CPU's
/// mask bit for bit) and computes the scale there too.
///
/// Returns `None` when DropBlock is the identity (`keep` = 1, or the map is smaller than the
/// block on either axis); the caller then passes x through.
///
/// # Errors
/// [`Error::Shape`] if `shape` is not rank 4; [`Error::Invalid`] if `block` is 0 or `keep` is not
/// in (0, 1]; a device error (on a GPU, also a sampling grid over
/// [`cuda::DROPBLOCK_MAX_GRID`] cells).
pub fn dropblock_mask(
    shape: &Shape,
    device: Device,
    block: usize,
    keep: f32,
    key: MaskKey,
) -> Result<Option<DropBlockMask>> {
    const OP: &str = "dropblock_mask";
    check_keep_prob(OP, keep)?;
    if block == 0 {
        return Err(Error::Invalid {
            op: OP,
            msg: "block size is 0".into(),
        });
    }
    let (n, c, h, w) = shape.nchw().ok_or_else(|| Error::Shape {
        op: OP,
        msg: format!("map has shape {shape}, expected rank 4 (N, C, H, W)"),
    })?;
    if keep == 1.0 || h < block || w < block {
        return Ok(None);
    }
    let (mask, scale) = dispatch!(OP, device = device,
        cpu => {
            let (mask, scale) = cpu::mask_and_scale(shape.len(), h, w, block, keep, key);
            Ok((DeviceVec::Cpu(mask), DeviceVec::Cpu(vec![scale])))
        },
        cuda |b| => {
            let (mut mask, mut scale) = (b.alloc::<u8>(shape.len())?, b.alloc::<f32>(1)?);
            let drawn =
                cuda::dropblock_mask(b, &mut mask, &mut scale, [n, c, h, w], block, keep, key)?;
            debug_assert!(drawn, "the identity cases were returned above");
            Ok((b.wrap(mask), b.wrap(scale)))
        },
    )?;
    Ok(Some(DropBlockMask {
        shape: shape.clone(),
        keep: mask,
        scale,
    }))
}

/// Applies a drawn mask: out = inp * mask * scale.
///
/// Forward: inp = x -> out = y. Backward: inp = dy -> out = dx, since y is linear in x with the
/// diagonal Jacobian diag(mask * scale) (the mask does not depend on x).
///
/// inp: (N, C, H, W) -> out: (N, C, H, W), overwritten.
///
/// # Errors
/// A shape error if `inp` or `out` does not have the mask's shape; mixed devices (the mask
/// included).
pub fn dropblock_apply(out: &mut Tensor, inp: &Tensor, mask: &DropBlockMask) -> Result<()> {
    const OP: &str = "dropblock_apply";
    inp.expect_shape(OP, "input", mask.shape.dims())?;
    out.expect_shape(OP, "output", mask.shape.dims())?;
    dispatch!(OP, [("output", out), ("input", inp)],
        cpu => {
            let (keep, scale) = host_mask(OP, mask)?;
            cpu::apply(out.as_mut_slice()?, inp.as_slice()?, keep, scale);
            Ok(())
        },
        cuda |b| => {
            let (outb, inpb) = (b.buf_mut(OP, out)?, b.buf(OP, inp)?);
            let keep = b.vec_buf(OP, "mask", &mask.keep)?;
            let scale = b.vec_buf(OP, "mask", &mask.scale)?;
            cuda::dropblock_apply(b, outb, inpb, keep, scale)
        },
    )
}

/// The mask and scale of a mask in host memory; an error naming `op` for one on a device.
fn host_mask<'a>(op: &'static str, mask: &'a DropBlockMask) -> Result<(&'a [u8], f32)> {
    match (mask.keep.as_host(), mask.scale.as_host()) {
        (Some(keep), Some(&[scale])) => Ok((keep, scale)),
        _ => Err(tensor_core::Error::MixedDevices {
            op,
            what: "mask",
            got: mask.device(),
            expected: Device::Cpu,
        }
        .into()),
    }
}

/// [`dropblock_apply`] in place: x = x * mask * scale, in one pass on the CPU (on a GPU, through
/// a copy of x and the same kernel).
///
/// x: (N, C, H, W), overwritten.
///
/// # Errors
/// A shape error if `x` does not have the mask's shape; the mask on another device than x.
pub fn dropblock_apply_in_place(x: &mut Tensor, mask: &DropBlockMask) -> Result<()> {
    const OP: &str = "dropblock_apply_in_place";
    x.expect_shape(OP, "x", mask.shape.dims())?;
    match x.device() {
        Device::Cpu => {
            let (keep, scale) = host_mask(OP, mask)?;
            cpu::apply_in_place(x.as_mut_slice()?, keep, scale)
        }
        _ => {
            let input = x.clone();
            dropblock_apply(x, &input, mask)?;
        }
    }
    Ok(())
}
